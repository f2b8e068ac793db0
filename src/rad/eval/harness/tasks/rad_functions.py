# The harness loads the functions a task YAML names (`!function rad_functions.NAME`) from a file beside the YAML.
from rad.eval.harness.task_data import documents, problems, score  # noqa: F401

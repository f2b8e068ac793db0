"""rad models in lm-evaluation-harness: a backend over rad's model code and decoding (`backend`), the tasks
rad ships as local YAML files (`tasks/`, their data from `task_data`), and the run behind `rad eval --lm-eval`."""

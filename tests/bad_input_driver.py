"""Runs `rad` command lines in one process under an address-space limit, one after the other, and prints one JSON
line per case: its exit code, what it printed on stderr, and any traceback. tests/test_bad_input.py starts it.

A case runs through rad.app.cli.main, the same function the `rad` command calls, with stdout and stderr
captured; only a user's mistake may end it (exit 2, one line), so any other exception is reported as a traceback.
Under the limit an oversized allocation fails the case instead of the machine.

Usage: python bad_input_driver.py CASES.json LIMIT_BYTES
"""

import contextlib
import io
import json
import resource
import sys
import traceback

cases_file, limit = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

from rad.app.cli import main  # noqa: E402  (after the limit: torch's own allocations count too)

for name, argv in json.load(open(cases_file)):
    out, err = io.StringIO(), io.StringIO()
    trace = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exit_:  # --help and the like
        code = exit_.code
    except BaseException:  # noqa: BLE001 - exactly what the test must see
        code, trace = None, traceback.format_exc()
    print(json.dumps({"name": name, "code": code, "stderr": err.getvalue()[-2000:], "traceback": trace}), flush=True)

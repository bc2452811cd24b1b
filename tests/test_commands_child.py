"""`deid archive` / `deid demo` run the Ray job in a child process
(:func:`deid.commands.run_child`): a stop sent to `deid` (a scheduler's SIGTERM reaches
only the process it started) must reach the job and let it unwind — delete the
patients' swap models and face crops, shut its local Ray down — not kill it."""

import signal
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent("""
    import pathlib, signal, sys, time

    def stop(signum, frame):
        time.sleep(1.0)  # a clean-up that takes a while (Ray's shutdown takes seconds)
        pathlib.Path(sys.argv[1]).write_text(signal.Signals(signum).name)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pathlib.Path(sys.argv[1] + ".ready").write_text("")
    time.sleep(60)
""")

PARENT = textwrap.dedent("""
    import sys
    from deid._signals import sigterm_interrupts
    from deid.commands import run_child

    try:
        with sigterm_interrupts():  # as deid.cli.main runs every command
            rc = run_child([sys.executable, sys.argv[1], sys.argv[2]])
    except KeyboardInterrupt:
        rc = 99
    sys.exit(rc)
""")


def _start(tmp_path):
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "parent.py").write_text(PARENT)
    marker = tmp_path / "cleaned"
    p = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(tmp_path / "child.py"), str(marker)],
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "cleaned.ready").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()
    return p, marker


def test_sigterm_to_deid_reaches_the_job_and_waits_for_its_cleanup(tmp_path):
    p, marker = _start(tmp_path)
    p.send_signal(signal.SIGTERM)  # to the parent only, as a scheduler does
    _, err = p.communicate(timeout=30)
    assert marker.is_file() and marker.read_text() == "SIGTERM", err  # the child unwound (not SIGKILLed)
    assert p.returncode == 143, err  # the job's own exit code


def test_sigint_to_deid_alone_is_passed_on(tmp_path):
    p, marker = _start(tmp_path)
    p.send_signal(signal.SIGINT)  # no terminal: the child did not get it
    _, err = p.communicate(timeout=30)
    assert marker.is_file() and marker.read_text() == "SIGINT", err
    assert p.returncode == 130, err


def test_ctrl_c_on_the_whole_group_does_not_cut_the_cleanup_short(tmp_path):
    p, marker = _start(tmp_path)
    import os

    os.killpg(p.pid, signal.SIGINT)  # both processes get it (a terminal's Ctrl-C)
    _, err = p.communicate(timeout=30)
    assert marker.is_file() and marker.read_text() == "SIGINT", err  # finished its clean-up
    assert p.returncode == 130, err

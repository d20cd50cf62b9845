"""Runs `pipemesh train` on a pseudo-terminal, as a user at a shell would,
presses Ctrl-C once it shows progress and answers the question it asks.

Usage: terminal_ctrl_c.py PIPEMESH ANSWER ARGS...
Prints what the terminal showed, then "EXIT <status>".
"""
import os
import pty
import select
import sys
import time

pipemesh, answer, arguments = sys.argv[1], sys.argv[2], sys.argv[3:]
pid, terminal = pty.fork()
if pid == 0:
    os.execv(pipemesh, [pipemesh, *arguments])

shown = b""
deadline = time.time() + 180


def read_until(text):
    global shown
    while text not in shown:
        if time.time() > deadline:
            sys.exit(f"no {text!r} within 180 s; the terminal showed:\n{shown.decode(errors='replace')}")
        ready, _, _ = select.select([terminal], [], [], 1)
        if ready:
            try:
                shown += os.read(terminal, 4096)
            except OSError:
                sys.exit(f"the command ended before {text!r}:\n{shown.decode(errors='replace')}")


read_until(b"samples/s")
os.write(terminal, b"\x03")  # Ctrl-C: the terminal sends SIGINT
read_until(b"[y/N]")
os.write(terminal, answer.encode() + b"\n")
read_until(b"job ")
_, status = os.waitpid(pid, 0)
try:
    while select.select([terminal], [], [], 0.2)[0]:
        shown += os.read(terminal, 4096)
except OSError:
    pass
print(shown.decode(errors="replace"))
print(f"EXIT {os.waitstatus_to_exitcode(status)}")

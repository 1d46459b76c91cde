"""The console's terminal: where lines come from, what a pasted line means, and an event loop of
its own so that the terminal keeps the main thread.

The main thread blocks in ``input()``: there readline edits the line and keeps its history, and
Ctrl-C arrives as KeyboardInterrupt with the terminal restored by readline. (An ``input()`` in a
worker thread, as before, could not be interrupted, and a Ctrl-C then hung the exit waiting for
it.) The sandbox, the bot and the console's commands run on a loop in a thread beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import threading
from collections.abc import Coroutine, Iterable, Iterator
from concurrent import futures
from typing import Any, TextIO, TypeVar

PROMPT = "failover> "
# A comment starts at a `#` that begins the line or follows a space, and is followed by a space
# or the end of the line, as in the README's demo; `#2` (an operation's number) is a word.
_COMMENT = re.compile(r"(?:^|\s)#(?:\s.*)?$")
T = TypeVar("T")


def without_prompt(line: str) -> str:
    """``line`` less a leading ``failover>`` prompt, pasted with it from the README or from a
    transcript."""
    text = line.strip()
    prompt = PROMPT.rstrip()
    return text[len(prompt) :].strip() if text.startswith(prompt) else text


def cleaned(line: str) -> str:
    """What the console runs of a typed or pasted line: no prompt, no trailing ``# comment``."""
    return _COMMENT.sub("", without_prompt(line)).strip()


def typed() -> Iterator[str]:
    """Lines typed at a terminal, with line editing and history where readline is built; ends
    on Ctrl-D or on Ctrl-C at the prompt."""
    with contextlib.suppress(ImportError):  # not built on every platform (Windows)
        import readline  # noqa: F401  (importing it is what gives input() editing and history)
    while True:
        try:
            yield input(PROMPT)
        except (EOFError, KeyboardInterrupt):
            print(flush=True)  # the shell's prompt on a line of its own
            return


def echoed(lines: Iterable[str], out: TextIO) -> Iterator[str]:
    """Lines from a script or a pipe, each shown after the prompt as if typed, so that the
    output reads like a session."""
    for raw in lines:
        line = raw.rstrip("\r\n")
        if line.strip():
            print(f"{PROMPT}{without_prompt(line)}", file=out, flush=True)
        yield line


class LoopThread:
    """An asyncio event loop running in a thread of its own, driven from the main thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="demo-loop", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        if hasattr(signal, "pthread_sigmask"):  # POSIX
            # Ctrl-C is the main thread's: a SIGINT the kernel handed to this thread (or to the
            # threads it starts, which inherit the mask) would not wake input() or a wait there.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it; a Ctrl-C meanwhile cancels it, and is raised
        again for the caller to decide (back to the prompt, or out)."""
        unwound = threading.Event()

        async def running() -> T:
            try:
                return await coro
            finally:
                unwound.set()

        future = asyncio.run_coroutine_threadsafe(running(), self.loop)
        try:
            # Waited for in short steps: a SIGINT that lands after the last check for signals
            # but before a lock wait begins does not interrupt that wait; it is raised when the
            # step ends.
            while not future.done():
                futures.wait([future], timeout=0.2)
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            # What it prints as it unwinds comes before the next prompt. (Cancelled before it
            # started, it never sets the event: the wait is bounded.)
            unwound.wait(timeout=5)
            raise

    def close(self) -> None:
        """Cancel what is left on the loop, stop it and wait for its thread."""

        async def finish() -> None:
            current = asyncio.current_task()
            left = [t for t in asyncio.all_tasks() if t is not current]
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(finish(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()

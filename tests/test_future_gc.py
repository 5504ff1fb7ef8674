"""The client's futures and pickled arguments under threads and the garbage collector never
crash the interpreter.

Each case runs in its own interpreter (``run_python``): a segfault is then this test's failure
(the child's exit status and its faulthandler dump), not a dead pytest.

Why these: a client whose futures made their lock only when waited on crashed in CPython 3.11's
collector (SIGSEGV, lane and lease threads). The cause was not the futures: CPython 3.11 clears a
``memoryview`` met in a garbage cycle even while another view still exports from it, and
crashes when that view lets go (CPython gh-77894, fixed in 3.12 and 3.13 in 2024, never in 3.11). A
large memoryview argument pickles to a ``PickleBuffer`` of it, whose ``raw()`` view became the
argument's blob; the blob lives in the job, which is in a reference cycle with its futures. The
lighter futures had only moved the collections that reached such a cycle.
"""

from __future__ import annotations

import textwrap

from .conftest import run_python


def run_child(code: str, timeout: float = 120) -> None:
    done = run_python("import faulthandler; faulthandler.enable()\n" + textwrap.dedent(code), timeout=timeout)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (
        f"child exited {done.returncode}\nstdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-6000:]}")


def test_a_memoryview_arguments_blobs_in_a_reference_cycle_survive_collection():
    run_child("""
        import gc
        from podrun.wire import serialize

        for fast in (False, True):
            for shape in ((200_000,), (500, 400)):
                view = memoryview(bytes(200_000)).cast("B", shape)
                pickled = serialize.dumps(((view, 1), {}), threshold=1_000, fast=fast)
                assert [v.nbytes for v in pickled.blobs.values()] == [200_000]

                class Holder:  # the job <-> future cycle, in small
                    pass

                holder = Holder()
                holder.pickled, holder.view, holder.self = pickled, view, holder
                del view, pickled, holder
                gc.collect()
        print("ok")
    """)


def test_a_memoryview_argument_next_to_an_unpicklable_one_survives_collection_of_the_error():
    """A pickling that fails keeps its pickler (and the ``PickleBuffer`` it made of the view)
    in the error's traceback; a caller holding that error in a cycle must not crash."""
    run_child("""
        import gc, threading
        from podrun.errors import SerializationError
        from podrun.wire import serialize

        class Holder:
            pass

        for _ in range(3):
            view = memoryview(bytes(200_000))
            try:
                serialize.dumps(((view, threading.Lock()), {}), threshold=1_000)
            except SerializationError as exc:
                holder = Holder()
                holder.error, holder.view, holder.self = exc, view, holder
            else:
                raise AssertionError("a lock pickled")
            del view, holder
            gc.collect()
        print("ok")
    """)


def test_futures_made_settled_and_waited_on_from_many_threads_while_others_collect():
    """8 threads for about 3 s: makers settling futures (some by exception, some cancelled),
    waiters on them through ``wait``, ``as_completed``, callbacks and ``result``, the collector
    run by hand from two more threads and paused from others (``gc_pause``), reference cycles
    made throughout. Every future ends once, every callback runs once."""
    run_child("""
        import concurrent.futures as cf, gc, random, threading, time
        from podrun.client.future import ObjectFuture
        from podrun.client.gc_pause import BULK, paused_gc

        stop = time.monotonic() + 3
        errors, callbacks, made = [], [], [0, 0]  # futures made, callbacks added
        lock = threading.Lock()

        class Cycle:
            def __init__(self, futures):
                self.futures, self.me = futures, self

        def guard(work):
            def run():
                try:
                    work()
                except BaseException as exc:
                    errors.append(repr(exc))
            return run

        def settle(batch):
            for i, future in enumerate(batch):
                if i % 7 == 0:
                    future.cancel()
                    future.set_running_or_notify_cancel()
                elif i % 5 == 0:
                    future.set_running_or_notify_cancel()
                    future.set_exception(KeyError(i))
                else:
                    future.set_running_or_notify_cancel()
                    future.set_result(i)

        def maker(seed):
            rng = random.Random(seed)
            while time.monotonic() < stop:
                batch = [ObjectFuture("f") for _ in range(rng.randint(1, 300))]
                for future in batch[::3]:
                    future.add_done_callback(lambda f: callbacks.append(1))
                Cycle(batch)
                waiter = threading.Thread(target=guard(lambda: wait_on(batch, rng.random())))
                waiter.start()
                with paused_gc(BULK if rng.random() < 0.5 else 1):
                    settle(batch)
                waiter.join(30)
                assert not waiter.is_alive(), "a waiter missed its futures' ends"
                assert all(f.done() for f in batch)
                with lock:
                    made[0] += len(batch)
                    made[1] += len(batch[::3])

        def wait_on(batch, pick):
            if pick < 0.25:
                done, not_done = cf.wait(batch, timeout=30)
                assert not not_done
            elif pick < 0.5:
                assert len(list(cf.as_completed(batch, timeout=30))) == len(batch)
            elif pick < 0.75:
                cf.wait(batch, timeout=30, return_when=cf.FIRST_EXCEPTION)
                cf.wait(batch, timeout=30)
            else:
                for future in batch:
                    try:
                        future.exception(timeout=30)
                    except cf.CancelledError:
                        assert future.cancelled()

        def collector():
            while time.monotonic() < stop:
                gc.collect(random.choice((0, 1, 2)))
                time.sleep(0.001)

        threads = [threading.Thread(target=guard(lambda s=s: maker(s))) for s in range(6)]
        threads += [threading.Thread(target=guard(collector)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors[:5]
        assert made[0] > 0 and len(callbacks) == made[1], (made, len(callbacks))
        print(made[0], "ok")
    """)

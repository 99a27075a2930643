"""An iterator run ahead in a background thread, so that stacking and placing the next batches on the
devices overlaps the current step instead of making the accelerator wait for the host."""
import queue
import threading

_END = object()


class Prefetch:
    """Items of `iterator`, produced `depth` ahead by a daemon thread; its exceptions re-raise here."""

    def __init__(self, iterator, depth=2):
        self._queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(iterator,), daemon=True, name="vifi_jax-prefetch")
        self._thread.start()

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterator):
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(error)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self, timeout=30.0):
        """Stop the thread (it finishes the item it is making) and drop what it made."""
        self._stop.set()
        self._thread.join(timeout)
        while not self._queue.empty():
            self._queue.get_nowait()

"""A process that makes many credit reservations from several threads (used by test_credits.py).

Usage: python -m tests.reserve_worker DATABASE_URL USER_ID PREFIX THREADS PER_THREAD
Prints "<taken> <refused>".
"""

import sys
import threading
import time

from services import credits, db


def main(url: str, user_id: int, prefix: str, threads: int, per_thread: int) -> None:
    database = db.Database(url)
    counts = {"taken": 0, "refused": 0}
    lock = threading.Lock()

    def run(index: int) -> None:
        conn = database.connect()
        try:
            for n in range(per_thread):
                try:
                    taken = credits.reserve(conn, user_id, 1, f"{prefix}-{index}-{n}", int(time.time()))
                    key = "taken" if taken else "refused"
                except credits.InsufficientCredits:
                    key = "refused"
                with lock:
                    counts[key] += 1
        finally:
            conn.close()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(counts["taken"], counts["refused"])


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))

"""A Python job pool: a process pool and a thread pool working at once (worker processes
are started by spawn or a fork server, each runs a few threads), as a test runner or a data pipeline would.
Usage: python3 pyproc.py [TASKS [SEED]]."""

import multiprocessing
import random
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor


def work(n: int) -> int:
    with ThreadPoolExecutor(max_workers=1 + n % 4) as pool:
        return sum(pool.map(lambda k: sum(range(k * 200)), range(n % 8)))


def main() -> None:
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    for _ in range(tasks // 10):
        ctx = multiprocessing.get_context("forkserver" if rng.random() < 0.5 else "spawn")
        with ProcessPoolExecutor(max_workers=rng.randint(1, 4), mp_context=ctx) as pool:
            list(pool.map(work, [rng.randint(1, 40) for _ in range(10)]))


if __name__ == "__main__":
    main()

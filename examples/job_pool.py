"""A pool of sandboxes serving jobs from a queue, concurrently, under asyncio.

    .venv/bin/python examples/job_pool.py [WORKERS] [JOBS]

Each worker owns one VM for its whole life and runs job after job in it; the jobs wait in an
`asyncio.Queue`. A job that fails does not take its worker down.
"""

from __future__ import annotations

import asyncio
import sys

from cocoon import AsyncSandbox


async def worker(number: int, jobs: asyncio.Queue[tuple[int, str]],
                 results: dict[int, str]) -> None:
    async with AsyncSandbox(memory_mib=64, timeout=600) as sandbox:
        while True:
            try:
                job, script = jobs.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await sandbox.run(["sh", "-c", script], timeout=60)
            output = result.stdout.decode().strip() or result.stderr.decode().strip()
            results[job] = f"job {job} on worker {number}: exit {result.returncode}: {output}"


async def main(workers: int, count: int) -> None:
    jobs: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for job in range(count):
        script = "exit 7" if job == 3 else f"echo $(( {job} * {job} ))"
        jobs.put_nowait((job, script))
    results: dict[int, str] = {}
    await asyncio.gather(*(worker(n, jobs, results) for n in range(workers)))
    for job in sorted(results):
        print(results[job])


if __name__ == "__main__":
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    asyncio.run(main(workers, count))

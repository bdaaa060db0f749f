"""Measures the Python peer (handler.py) the way crates/outbox-bench measures the
Rust relay, and prints one JSON line per measurement.

  run.py --endpoint URL --event FILE [--iterations N] [--latency-ms L] [--concurrency 1]
      The handler in this process on FILE: one warm-up run (it opens the
      connection), then N runs; per run the wall time and the CPU time of this
      process (getrusage, every thread) around lambda_handler; the time to parse
      the event JSON (json.loads) apart; the peak RSS of the process (ru_maxrss).
  run.py --endpoint URL --startup S
      Start-up: S fresh interpreters, each timed from spawn until it has
      imported handler.py (imports, boto3 client: Lambda's init phase).

Run it in a fresh process per event file so that the peak RSS is that file's.
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def peer_env(endpoint, concurrency=1):
    env = dict(os.environ)
    env.update(
        {
            "OUTBOX_EVENT_BUS_NAME": "bench-bus",
            "OUTBOX_MAX_CONCURRENCY": str(concurrency),
            "AWS_ENDPOINT_URL_EVENTBRIDGE": endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_SESSION_TOKEN": "test",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    return env


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_handler(args):
    os.environ.update(peer_env(args.endpoint, args.concurrency))
    sys.path.insert(0, HERE)
    import handler  # noqa: E402  (configuration comes from the environment set above)

    with open(args.event, "rb") as f:
        text = f.read()
    parse_cpu, parse_wall = [], []
    for _ in range(3):
        c0, t0 = cpu_seconds(), time.perf_counter()
        event = json.loads(text)
        parse_wall.append((time.perf_counter() - t0) * 1e3)
        parse_cpu.append((cpu_seconds() - c0) * 1e3)
    records = len(event["Records"])

    def run_once():
        c0, t0 = cpu_seconds(), time.perf_counter()
        response = handler.lambda_handler(event, None)
        wall = (time.perf_counter() - t0) * 1e3
        cpu = (cpu_seconds() - c0) * 1e3
        if response != {"batchItemFailures": []}:
            raise SystemExit(f"the peer answered {response}")
        return wall, cpu

    warm_up_wall, _ = run_once()
    walls, cpus = [], []
    for _ in range(args.iterations):
        wall, cpu = run_once()
        walls.append(wall)
        cpus.append(cpu)
    calls = math.ceil(records / 10)
    bound = None
    if args.latency_ms is not None:
        bound = math.ceil(calls / args.concurrency) * args.latency_ms
    print(
        json.dumps(
            {
                "mode": "python-peer",
                "event": os.path.basename(args.event),
                "event_bytes": len(text),
                "records": records,
                "concurrency": args.concurrency,
                "latency_ms": args.latency_ms,
                "iterations": args.iterations,
                "warm_up_wall_ms": warm_up_wall,
                "wall_ms_median": statistics.median(walls),
                "wall_ms_min": min(walls),
                "wall_ms_max": max(walls),
                "cpu_ms_median": statistics.median(cpus),
                "cpu_ms_min": min(cpus),
                "cpu_ms_max": max(cpus),
                "cpu_us_per_record_median": statistics.median(cpus) * 1e3 / records,
                "parse_cpu_us_per_record_median": statistics.median(parse_cpu) * 1e3 / records,
                "parse_wall_ms_median": statistics.median(parse_wall),
                "bound_ms": bound,
                "wall_over_bound": statistics.median(walls) / bound if bound else None,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "python": sys.version.split()[0],
            }
        ),
        flush=True,
    )


def measure_startup(args):
    env = peer_env(args.endpoint)
    code = f"import sys; sys.path.insert(0, {HERE!r}); import handler; print('ready', flush=True)"
    times, rss = [], []
    for _ in range(args.startup):
        t0 = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
        line = child.stdout.readline()
        ready = (time.perf_counter() - t0) * 1e3
        if line.strip() != b"ready":
            raise SystemExit("the peer did not start")
        _, status, usage = os.wait4(child.pid, 0)
        times.append(ready)
        rss.append(usage.ru_maxrss / 1024)
    print(
        json.dumps(
            {
                "mode": "python-peer-startup",
                "starts": args.startup,
                "init_ms_median": statistics.median(times),
                "init_ms_min": min(times),
                "init_ms_max": max(times),
                "idle_peak_rss_mib_median": statistics.median(rss),
                "python": sys.version.split()[0],
            }
        ),
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--event")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--latency-ms", type=float)
    parser.add_argument("--concurrency", type=int, default=1, help="PutEvents calls in flight (OUTBOX_MAX_CONCURRENCY)")
    parser.add_argument("--startup", type=int, help="time this many interpreter start-ups instead")
    args = parser.parse_args()
    if args.startup:
        measure_startup(args)
    elif args.event:
        measure_handler(args)
    else:
        parser.error("give --event FILE or --startup N")


if __name__ == "__main__":
    main()

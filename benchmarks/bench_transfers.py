"""The cost model's transfer tables: host <-> device time by size, each way,
through pinned and pageable memory, for every device hetnet finds.

    python benchmarks/bench_transfers.py [--record] [--machine NAME]

Prints the tables (microseconds and the bandwidth they imply) and writes
benchmarks/local/transfers/<machine>.json
(``--record``: benchmarks/results/transfers/<machine>.json) with the machine.
"""

import argparse

from _common import add_output_args


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_args(p)
    args = p.parse_args()
    from _common import machine, write_results
    from hetnet.sched.costmodel import TRANSFERS, calibrate
    from hetnet.devices import get_device, gpu_device
    devices = [get_device("cpu")]
    gpu, why = gpu_device()
    if gpu is not None:
        devices.append(gpu)
    else:
        print(f"no GPU: {why.splitlines()[0]}")
    results = {"benchmark": "transfers", "devices": {}}
    for dev in devices:
        table = calibrate(dev)
        results["devices"][dev.name] = {k: table.points[k] for k in TRANSFERS}
        print(dev.name)
        for k in TRANSFERS:
            cells = "  ".join(f"{int(s) >> 10:>5} KiB {t * 1e6:8.1f} us {s / t / 1e9:6.2f} GB/s"
                              for s, t in table.points[k])
            print(f"  {k:<20} {cells}")
    results["machine"] = machine()
    write_results(results, "transfers", args)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes a synthetic REST-service log with ground truth, in Loghub's layout, for `stencil bench patterns`.

    python3 scripts/synthetic-api-log.py /tmp/synthetic   # writes /tmp/synthetic/Api/Api_2k.log{,_structured.csv}
    stencil bench patterns --loghub /tmp/synthetic

Why: issue #13 reports grouping accuracy 0.449 on a held-out service log with request ids, tenant ids
inside URL paths and `status: … len: … time: …` tails, which this project may not read. This log is built
from those generic features alone (nothing in it comes from that log): quoted HTTP request lines whose
endpoints differ by method and by path shape, ids and UUIDs inside the paths, key=value and `key: value`
tails. Each event's lines differ only in values, so a parser that groups by endpoint scores 1.0. The seed
is fixed: the same file every run.
"""

import csv
import os
import random
import sys
import uuid

rng = random.Random(7)


def hexid(n=32):
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def uid():
    return str(uuid.UUID(int=rng.getrandbits(128)))


TENANTS = [hexid() for _ in range(6)]
USERS = [hexid() for _ in range(4)]


def request_id():
    return f"[req-{uid()} {rng.choice(USERS)} {rng.choice(TENANTS)} - - -]"


def ip():
    return f"10.{rng.randint(0, 9)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def tail(status):
    return f"status: {status} len: {rng.randint(200, 5000)} time: {rng.random():.7f}"


def http(method, path, status):
    return f'{request_id()} {ip()} "{method} {path} HTTP/1.1" {tail(status)}'


EVENTS = {
    "E1": (30, lambda: http("GET", f"/v2/{rng.choice(TENANTS)}/servers/detail", 200)),
    "E2": (15, lambda: http("GET", f"/v2/{rng.choice(TENANTS)}/servers/{uid()}", 200)),
    "E3": (5, lambda: http("POST", f"/v2/{rng.choice(TENANTS)}/servers", 202)),
    "E4": (5, lambda: http("DELETE", f"/v2/{rng.choice(TENANTS)}/servers/{uid()}", 204)),
    "E5": (8, lambda: f"{request_id()} [instance: {uid()}] Took {rng.uniform(1, 40):.2f} seconds to build instance."),
    "E6": (8, lambda: f"{request_id()} [instance: {uid()}] Instance destroyed successfully."),
    "E7": (6, lambda: (
        f"Final resource view: name=node-{rng.randint(1, 9)}.example.net phys_ram={rng.choice([64172, 32768])}MB "
        f"used_ram={rng.randint(1, 40) * 512}MB phys_disk=15GB used_disk={rng.randint(0, 9)}GB total_vcpus=16 "
        f"used_vcpus={rng.randint(0, 16)}")),
    "E8": (6, lambda: f"Total usable vcpus: 16, total allocated vcpus: {rng.randint(0, 16)}"),
    "E9": (8, lambda: (
        f"[instance: {uid()}] Attempting claim: memory {rng.choice([512, 2048])} MB, disk {rng.randint(1, 20)} GB, "
        f"vcpus {rng.randint(1, 4)} CPU")),
    "E10": (9, lambda: f"image {uid()} at (/var/lib/service/instances/_base/{hexid(40)}): checking"),
}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: synthetic-api-log.py DIR")
    folder = os.path.join(sys.argv[1], "Api")
    os.makedirs(folder, exist_ok=True)
    names = list(EVENTS)
    weights = [EVENTS[n][0] for n in names]
    with open(os.path.join(folder, "Api_2k.log"), "w") as log, open(
        os.path.join(folder, "Api_2k.log_structured.csv"), "w", newline=""
    ) as truth:
        rows = csv.writer(truth)
        rows.writerow(["LineId", "Content", "EventId"])
        for n in range(2000):
            event = rng.choices(names, weights=weights)[0]
            line = EVENTS[event][1]()
            log.write(line + "\n")
            rows.writerow([n + 1, line, event])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""`sacct -o JobID,State,NodeList --parsable2 -j ID ...` for a cluster without accounting.

submitit polls job states with exactly that query; without accounting the real sacct fails,
so this answers it from `scontrol -o show job ID` (jobs the controller still remembers).
"""

from __future__ import annotations

import subprocess
import sys


def job_ids(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-j"]


def records(job: str) -> list[dict[str, str]]:
    done = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True)
    found = []
    for line in done.stdout.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if "JobId" in fields:
            found.append(fields)
    return found


def job_label(fields: dict[str, str]) -> str:
    """`12_3` for an array task (as sacct prints it), the plain id otherwise."""
    if fields.get("ArrayJobId") and fields.get("ArrayTaskId") not in (None, "N/A"):
        return f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
    return fields["JobId"]


def main(argv: list[str]) -> int:
    print("JobID|State|NodeList")
    for job in job_ids(argv):
        for fields in records(job):
            print(f"{job_label(fields)}|{fields.get('JobState', 'UNKNOWN')}|{fields.get('NodeList', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

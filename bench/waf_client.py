#!/usr/bin/env python3
"""Sends every payload of a corpus as `GET /?q=<payload>` to one target and counts what is
blocked (HTTP 403) per attack family and per source. Prints one JSON object.

Usage: waf_client.py CORPUS HOST:PORT [WORKERS] [DECISIONS_FILE]

With DECISIONS_FILE, also writes one JSON line per payload: label, family, src, payload and
the status it got, for comparing targets payload by payload.
"""
import http.client
import json
import multiprocessing as mp
import sys
import time
import urllib.parse


def worker(args):
    target, rows = args
    host, port = target.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    out = []
    for label, family, src, payload in rows:
        path = "/?" + urllib.parse.urlencode({"q": payload})
        for attempt in range(3):
            try:
                conn.request("GET", path, headers={"User-Agent": "waf-compare/1", "Accept": "*/*"})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection(host, int(port), timeout=30)
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                status = -1
        out.append((label, family, src, payload, status))
    return out


def main():
    corpus, target = sys.argv[1], sys.argv[2]
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    rows = []
    with open(corpus) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows.append((r["label"], r.get("family", ""), r["src"], r["payload"]))
    chunks = [(target, rows[i::workers * 4]) for i in range(workers * 4)]
    started = time.time()
    with mp.Pool(workers) as pool:
        results = [x for part in pool.map(worker, chunks) for x in part]
    seconds = time.time() - started
    families, sources, benign, statuses = {}, {}, {}, {}
    if len(sys.argv) > 4:
        with open(sys.argv[4], "w") as f:
            for label, family, src, payload, status in results:
                f.write(json.dumps({"label": label, "family": family, "src": src,
                                    "payload": payload, "status": status}) + "\n")
    for label, family, src, _, status in results:
        blocked = status == 403
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        s = sources.setdefault(src, {"total": 0, "flagged": 0})
        s["total"] += 1
        s["flagged"] += blocked
        benign[src] = label != "attack"
        if label == "attack":
            c = families.setdefault(family, {"total": 0, "flagged": 0})
            c["total"] += 1
            c["flagged"] += blocked
    print(json.dumps({
        "families": families,
        "sources": sources,
        "benign_sources": benign,
        "statuses": statuses,
        "requests_per_second": len(results) / seconds,
    }))


if __name__ == "__main__":
    main()

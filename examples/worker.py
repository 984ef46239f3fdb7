#!/usr/bin/env python3
"""A complete Lucius worker in Python's standard library only.

It long-polls a Lucius node without a bus for directives (POST /v1/workers/poll),
acknowledges each (taking the step's lease), heartbeats while it works, and completes
or fails the step. Run a node, submit a command, then:

    python3 examples/worker.py --url http://127.0.0.1:8000

Options (each also read from the environment):
    --url URL            the node (LUCIUS_URL, default http://127.0.0.1:8000)
    --worker-key KEY     X-Worker-Key, when the node sets LUCIUS_WORKER_API_KEY
                         (LUCIUS_WORKER_API_KEY)
    --worker-id ID       this worker's name, the lease holder (default python-<pid>)
    --topics T,T         only these topics (default: every topic)
    --steps S,S          only these steps (default: every step)
    --exit-after N       stop after N steps completed or failed (default: run forever)
    --work-seconds S     time each step "works" (default 0.2)

The work itself is `perform()`: replace it with yours. Raise `StepFailed` to fail a
step (retryable or not); any other exception fails it as retryable.

Delivery is at least once: a directive this worker takes and never acknowledges (it
crashed, say) is handed out again, as a new attempt, after its ACK deadline. Every
call names the directive's `attempt`, so a late call from an old attempt is refused
(409) and the worker drops that directive.
"""

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request


class StepFailed(Exception):
    """Raised by perform() to fail a step; `retryable` lets another attempt try."""

    def __init__(self, message, retryable=False):
        super().__init__(message)
        self.retryable = retryable


def perform(directive):
    """The work of one step: returns its result (any JSON value)."""
    payload = directive.get("payload") or {}
    if isinstance(payload, dict) and payload.get("fail"):
        raise StepFailed("the payload asked to fail", retryable=False)
    time.sleep(WORK_SECONDS)
    return {
        "worker": "python",
        "step": directive["stepId"],
        "attempt": directive["attempt"],
        "input": directive.get("input"),
    }


WORK_SECONDS = 0.2


class Refused(Exception):
    """The node refused a call (4xx): the step moved on, drop the directive."""


class Client:
    def __init__(self, url, worker_key, worker_id):
        self.url = url.rstrip("/")
        self.worker_key = worker_key
        self.worker_id = worker_id

    def post(self, path, body, timeout):
        data = json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST")
        req.add_header("Content-Type", "application/json")
        if self.worker_key:
            req.add_header("X-Worker-Key", self.worker_key)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as res:
                return json.loads(res.read() or b"null")
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                err = json.loads(text)["error"]
                text = "%s: %s" % (err["code"], err["message"])
            except (ValueError, KeyError, TypeError):
                pass
            if e.code == 401:
                sys.exit("worker key refused (%s); set --worker-key" % text)
            if 400 <= e.code < 500:
                raise Refused("%d %s" % (e.code, text))
            raise

    def poll(self, topics, steps, wait_seconds):
        body = {"workerId": self.worker_id, "max": 1, "waitSeconds": wait_seconds}
        if topics:
            body["topics"] = topics
        if steps:
            body["steps"] = steps
        return self.post("/v1/workers/poll", body, timeout=wait_seconds + 10)["directives"]

    def call(self, directive, op, **extra):
        body = {"attempt": directive["attempt"], "workerId": self.worker_id}
        body.update(extra)
        path = "/v1/jobs/%s/steps/%s/%s" % (directive["jobId"], directive["stepId"], op)
        # Transient failures (the node restarting, a 503) are retried a few times.
        for attempt in range(5):
            try:
                return self.post(path, body, timeout=10)
            except Refused:
                raise
            except (urllib.error.URLError, OSError) as e:
                if attempt == 4:
                    raise
                log("%s failed (%s); retrying" % (op, e))
                time.sleep(0.5 * (attempt + 1))


def log(msg):
    print("worker: %s" % msg, file=sys.stderr, flush=True)


def heartbeat_until(client, directive, done, lost):
    """Extends the lease every third of its duration until `done` is set."""
    every = max(directive["leaseDurationMs"] / 3000.0, 0.05)
    while not done.wait(every):
        try:
            client.call(directive, "heartbeat")
        except Refused as e:
            log("lease lost on %s (%s)" % (directive["directiveId"], e))
            lost.set()
            return
        except Exception as e:  # the node may come back: keep trying
            log("heartbeat failed: %s" % e)


def work_on(client, directive):
    """Runs one directive to its end; returns True if the node took the outcome."""
    did = directive["directiveId"]
    if directive.get("schemaVersion") != 1:
        client.call(directive, "fail", error="unknown schemaVersion", retryable=False)
        return True
    try:
        client.call(directive, "ack")
    except Refused as e:
        log("ack of %s refused (%s); dropped" % (did, e))
        return False
    done, lost = threading.Event(), threading.Event()
    beat = threading.Thread(target=heartbeat_until, args=(client, directive, done, lost))
    beat.daemon = True
    beat.start()
    try:
        result = perform(directive)
        outcome = ("complete", {"result": result})
    except StepFailed as e:
        outcome = ("fail", {"error": str(e)[:4096] or "failed", "retryable": e.retryable})
    except Exception as e:  # a bug in perform(): let another attempt try
        outcome = ("fail", {"error": ("%s: %s" % (type(e).__name__, e))[:4096], "retryable": True})
    finally:
        done.set()
        beat.join()
    if lost.is_set():
        return False
    op, extra = outcome
    try:
        client.call(directive, op, **extra)
    except Refused as e:
        log("%s of %s refused (%s)" % (op, did, e))
        return False
    log("%s %s (job %s, step %s)" % ("completed" if op == "complete" else "failed", did,
                                      directive["jobId"], directive["stepId"]))
    return True


def split(value):
    return [v for v in (value or "").split(",") if v]


def main():
    global WORK_SECONDS
    p = argparse.ArgumentParser(description="A Lucius worker that pulls directives over HTTP.")
    p.add_argument("--url", default=os.environ.get("LUCIUS_URL", "http://127.0.0.1:8000"))
    p.add_argument("--worker-key", default=os.environ.get("LUCIUS_WORKER_API_KEY"))
    p.add_argument("--worker-id", default="python-%d" % os.getpid())
    p.add_argument("--topics", default="")
    p.add_argument("--steps", default="")
    p.add_argument("--exit-after", type=int, default=0)
    p.add_argument("--work-seconds", type=float, default=WORK_SECONDS)
    p.add_argument("--wait-seconds", type=float, default=20.0)
    args = p.parse_args()
    WORK_SECONDS = args.work_seconds
    client = Client(args.url, args.worker_key, args.worker_id)
    topics, steps = split(args.topics), split(args.steps)
    log("%s polling %s" % (args.worker_id, args.url))
    handled = 0
    while args.exit_after <= 0 or handled < args.exit_after:
        try:
            directives = client.poll(topics, steps, args.wait_seconds)
        except Refused as e:
            sys.exit("poll refused: %s" % e)
        except (urllib.error.URLError, OSError) as e:
            log("poll failed (%s); retrying in 1 s" % e)
            time.sleep(1)
            continue
        for d in directives:
            if work_on(client, d):
                handled += 1
    log("handled %d steps; exiting" % handled)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass

"""Runway's Python SDK (runwayml) as an application uses it, for scripts/sdk-proxy/run.sh.
The base URL comes from RUNWAYML_BASE_URL, as in an application: the only thing run.sh
changes between a run straight to the stand-in and one through the proxy.

    python client.py plan PLAN_JSON OUT_JSON
        Runs the plan (standin.py plan): creates each task, then polls it to its end,
        deletes it, or waits for it with the SDK's helper; writes every object returned
        and every error raised, serialised (status, headers, body bytes), to OUT_JSON.
    python client.py stream WORKERS TASKS OUT_JSON
        WORKERS threads each create TASKS tasks one after the other and poll each to its
        end: a steady stream of calls. Writes the ids and any error to OUT_JSON; exits 1
        if any call failed (after the SDK's own retries).
"""
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import runwayml
from runwayml import RunwayML, TaskFailedError

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding"}
client = RunwayML(api_key=os.environ.get("RUNWAYML_API_SECRET", "key_standin"))


def headers(h):
    return sorted((k.lower(), v) for k, v in h.items() if k.lower() not in HOP_BY_HOP)


def error(e):
    out = {"error": type(e).__name__, "message": str(e)}
    if isinstance(e, runwayml.APIStatusError):
        r = e.response
        out.update(status=e.status_code, body=e.body, headers=headers(r.headers), text=r.text)
    if isinstance(e, TaskFailedError):
        out["task_details"] = e.task_details.model_dump(mode="json")
    return out


def create(step, prompt):
    endpoint, model = step["endpoint"], step["model"]
    if endpoint == "image_to_video":
        return client.image_to_video.create(
            model=model, prompt_image="https://example.com/in.png", ratio="1280:720", prompt_text=prompt
        )
    if endpoint == "text_to_video":
        return client.text_to_video.create(model=model, prompt_text=prompt, ratio="1280:720")
    if endpoint == "text_to_image":
        return client.text_to_image.create(model=model, prompt_text=prompt, ratio="1280:720")
    return client.generate.video.create(config_id="standin-router", input={"prompt_text": prompt})


def retrieve(task_id):
    """GET /v1/tasks/{id}: the answer as the SDK gives it, and its status, headers, bytes."""
    r = client.tasks.with_raw_response.retrieve(task_id)
    task = r.parse()
    return task, {"status": r.status_code, "headers": headers(r.headers), "text": r.http_response.text,
                  "task": task.model_dump(mode="json")}


def delete(task_id):
    """DELETE /v1/tasks/{id}: its status, headers and bytes (the SDK returns nothing)."""
    r = client.tasks.with_raw_response.delete(task_id)
    return None, {"status": r.status_code, "headers": headers(r.headers), "text": r.http_response.text}


def run_step(step, prompt):
    results = []

    def call(name, fn):
        try:
            value = fn()
            results.append({"call": name, "ok": value[1] if isinstance(value, tuple) else value.model_dump(mode="json")})
            return value
        except (runwayml.APIError, TaskFailedError) as e:
            results.append({"call": name, "raised": error(e)})
            return None

    created = call("create", lambda: create(step, prompt))
    if created is None:
        return results
    if step["then"] == "wait":
        call("wait_for_task_output", lambda: created.wait_for_task_output(timeout=30))
    elif step["then"] == "delete":
        call("retrieve", lambda: retrieve(created.id))
        call("delete", lambda: delete(created.id))
        call("retrieve after delete", lambda: retrieve(created.id))
    elif step["then"] == "poll":
        for _ in range(10):  # bounded: every timeline ends within 3 answers
            got = call("retrieve", lambda: retrieve(created.id))
            if got is None or got[0].status in TERMINAL:
                break
    return results


def run_plan(plan_file, out_file):
    with open(plan_file) as f:
        plan = json.load(f)
    # The waits sleep ~6 s before their first poll: they run beside the rest.
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(run_step, s, f"py-{s['n']}-{s['scenario']}") for s in plan if s["then"] == "wait"]
        rest = [run_step(s, f"py-{s['n']}-{s['scenario']}") for s in plan if s["then"] != "wait"]
        waited = [f.result() for f in futures]
    out = {f"{s['n']}-{s['scenario']}": r for s, r in zip([s for s in plan if s["then"] != "wait"], rest)}
    out.update({f"{s['n']}-{s['scenario']}": r for s, r in zip([s for s in plan if s["then"] == "wait"], waited)})
    with open(out_file, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"runwayml {runwayml.__version__}: {sum(len(r) for r in out.values())} calls", file=sys.stderr)


def stream_worker(w, tasks):
    done, errors = [], []
    for i in range(tasks):
        try:
            task = client.image_to_video.create(
                model="gen4_turbo", prompt_image="https://example.com/in.png", ratio="1280:720",
                prompt_text=f"py{w}.{i}-ok",
            )
            for _ in range(10):
                got = client.tasks.retrieve(task.id)
                if got.status in TERMINAL:
                    break
            done.append(task.id)
        except runwayml.APIError as e:
            errors.append(error(e))
    return done, errors


def run_stream(workers, tasks, out_file):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda w: stream_worker(w, tasks), range(workers)))
    done = [t for d, _ in results for t in d]
    errors = [e for _, es in results for e in es]
    with open(out_file, "w") as f:
        json.dump({"done": done, "errors": errors}, f)
    print(f"runwayml stream: {len(done)} tasks done, {len(errors)} calls failed", file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["plan"] and len(sys.argv) == 4:
        run_plan(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["stream"] and len(sys.argv) == 5:
        run_stream(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(__doc__)

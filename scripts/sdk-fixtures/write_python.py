"""Writes the py-*.log fixtures with Runway's real Python SDK (runwayml), the way an
application would log tasks. Run by run.sh in its venv against standin.py:

    python write_python.py BASE_URL PLAN_JSON OUT_DIR
"""
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import runwayml
from runwayml import RunwayML, TaskFailedError

base_url, plan_file, out_dir = sys.argv[1:4]
with open(plan_file) as f:
    plan = json.load(f)
client = RunwayML(base_url=base_url, api_key="dummy")
model = plan["model"]
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")

# file -> how the application logs one task (the snippets the README quotes)
VARIANTS = {
    "py-to-json.log": lambda task: task.to_json(),
    "py-to-json-compact.log": lambda task: task.to_json(indent=None),
    "py-model-dump-json.log": lambda task: task.model_dump_json(),
    "py-model-dump-mode-json.log": lambda task: json.dumps(task.model_dump(mode="json")),
    "py-nested.log": lambda task: json.dumps(
        {"event": "runway_task", "model": model, "task": task.model_dump(mode="json")}
    ),
}
logs = {name: open(f"{out_dir}/{name}", "w") for name in VARIANTS}


def log(task):
    for name, render in VARIANTS.items():
        logs[name].write(render(task) + "\n")


# Poll each task until it is terminal, logging every answer; then fetch some again.
for task_id in plan["poll"]:
    for _ in range(10):  # bounded: every timeline ends terminal within 3 polls
        task = client.tasks.retrieve(task_id)
        log(task)
        if task.status in TERMINAL:
            break
    else:
        sys.exit(f"task {task_id} never became terminal")
for task_id in plan["refetch"]:
    log(client.tasks.retrieve(task_id))


# Workflow invocations and realtime sessions: polled and logged the same ways (they are
# not tasks; the exporter counts them apart). An invocation is fetched again for its cost.
def poll(retrieve, ids, terminal):
    for obj_id in ids:
        for _ in range(10):  # bounded: every timeline ends terminal within 4 polls
            obj = retrieve(obj_id)
            log(obj)
            if obj.status in terminal:
                break
        else:
            sys.exit(f"{obj_id} never became terminal")


poll(client.workflow_invocations.retrieve, plan["workflows"], TERMINAL)
for wid in plan["workflow_refetch"]:
    log(client.workflow_invocations.retrieve(wid))
poll(client.realtime_sessions.retrieve, plan["sessions"], ("COMPLETED", "FAILED", "CANCELLED"))

# Create + wait_for_task_output(), logging the TaskFailedError. The helper sleeps 6 s
# (+-1.5 s) before its first poll, so the waits run side by side; lines keep plan order.
created = {}
for task_id in plan["py_errors"]:
    if task_id not in created:
        created[task_id] = client.image_to_video.create(
            model="gen4_turbo", prompt_image="https://example.com/in.png", ratio="1280:720", prompt_text=task_id
        )


def wait(task_id):
    try:
        created[task_id].wait_for_task_output(timeout=60)
    except TaskFailedError as e:
        return json.dumps({"error": str(e), "task_details": e.task_details.model_dump(mode="json")})
    sys.exit(f"task {task_id}: no TaskFailedError")


with ThreadPoolExecutor(max_workers=len(plan["py_errors"])) as pool:
    lines = list(pool.map(wait, plan["py_errors"]))
with open(f"{out_dir}/py-task-failed-error.log", "w") as f:
    f.writelines(line + "\n" for line in lines)
for f in logs.values():
    f.close()
print(f"runwayml {runwayml.__version__}: wrote {len(VARIANTS) + 1} files", file=sys.stderr)

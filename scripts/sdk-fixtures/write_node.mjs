// Writes the node-*.log fixtures with Runway's real Node SDK (@runwayml/sdk), the way an
// application would log tasks. run.sh copies it next to the installed node_modules and
// runs it against standin.py:
//
//     node write_node.mjs BASE_URL PLAN_JSON OUT_DIR
import { readFileSync, writeFileSync } from 'node:fs';
import RunwayML, { TaskFailedError } from '@runwayml/sdk';

const [baseURL, planFile, outDir] = process.argv.slice(2);
const plan = JSON.parse(readFileSync(planFile, 'utf8'));
const client = new RunwayML({ baseURL, apiKey: 'dummy' });
const TERMINAL = ['SUCCEEDED', 'FAILED', 'CANCELLED'];

// file -> how the application logs one task (the snippets the README quotes)
const variants = {
  'node-stringify.log': (task) => JSON.stringify(task),
  'node-stringify-pretty.log': (task) => JSON.stringify(task, null, 2),
};
const lines = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
const log = (task) => {
  for (const [name, render] of Object.entries(variants)) lines[name].push(render(task));
};

// Poll each task until it is terminal, logging every answer; then fetch some again.
for (const id of plan.poll) {
  let task;
  for (let i = 0; i < 10 && !TERMINAL.includes(task?.status); i++) {
    task = await client.tasks.retrieve(id);
    log(task);
  }
  if (!TERMINAL.includes(task.status)) throw new Error(`task ${id} never became terminal`);
}
for (const id of plan.refetch) log(await client.tasks.retrieve(id));

// Workflow invocations and realtime sessions: polled and logged the same ways (they are
// not tasks; the exporter counts them apart). An invocation is fetched again for its cost.
const poll = async (retrieve, ids, terminal) => {
  for (const id of ids) {
    let obj;
    for (let i = 0; i < 10 && !terminal.includes(obj?.status); i++) {
      obj = await retrieve(id);
      log(obj);
    }
    if (!terminal.includes(obj.status)) throw new Error(`${id} never became terminal`);
  }
};
await poll((id) => client.workflowInvocations.retrieve(id), plan.workflows, TERMINAL);
for (const id of plan.workflow_refetch) log(await client.workflowInvocations.retrieve(id));
await poll((id) => client.realtimeSessions.retrieve(id), plan.sessions, ['COMPLETED', 'FAILED', 'CANCELLED']);

// create + waitForTaskOutput(), logging the TaskFailedError (thrown for FAILED and
// CANCELLED). JSON.stringify(err) keeps the task: an Error's message and stack are not
// enumerable, but the SDK sets `taskDetails` and `name` as own properties, so it yields
// {"taskDetails":{...},"name":"TaskFailedError"} (err.message, the `failure` text or
// "Task cancelled", is lost). The helper sleeps 6 s (+-1.5 s) before its first poll, so
// the waits run side by side; lines keep plan order.
const created = new Map();
for (const id of plan.node_errors) {
  if (!created.has(id)) {
    created.set(id, client.imageToVideo.create({
      model: 'gen4_turbo', promptImage: 'https://example.com/in.png', ratio: '1280:720', promptText: id,
    }));
  }
}
const errors = await Promise.all(plan.node_errors.map(async (id) => {
  try {
    await created.get(id).waitForTaskOutput({ timeout: 60_000 });
  } catch (err) {
    if (err instanceof TaskFailedError) return JSON.stringify(err);
    throw err;
  }
  throw new Error(`task ${id}: no TaskFailedError`);
}));
lines['node-task-failed-error.log'] = errors;

for (const [name, list] of Object.entries(lines)) {
  writeFileSync(`${outDir}/${name}`, list.map((line) => line + '\n').join(''));
}
const { VERSION } = await import('@runwayml/sdk/version.js');
console.error(`@runwayml/sdk ${VERSION}: wrote ${Object.keys(lines).length} files`);

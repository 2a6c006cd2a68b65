// Runway's Node SDK (@runwayml/sdk) as an application uses it, for scripts/sdk-proxy/run.sh
// (which copies it next to the installed node_modules). The base URL comes from
// RUNWAYML_BASE_URL, as in an application: the only thing run.sh changes between a run
// straight to the stand-in and one through the proxy.
//
//     node client.mjs plan PLAN_JSON OUT_JSON
//         Runs the plan (standin.py plan), as client.py does; writes every object returned
//         and every error raised, serialised (status, headers, body bytes), to OUT_JSON.
//     node client.mjs stream WORKERS TASKS OUT_JSON
//         WORKERS loops each create TASKS tasks one after the other and poll each to its
//         end; writes the ids and any error; exits 1 if any call failed (after retries).
import { readFileSync, writeFileSync } from 'node:fs';
import RunwayML, { APIError, TaskFailedError } from '@runwayml/sdk';

const client = new RunwayML({ apiKey: process.env.RUNWAYML_API_SECRET ?? 'key_standin' });
const TERMINAL = ['SUCCEEDED', 'FAILED', 'CANCELLED'];
const HOP_BY_HOP = ['connection', 'keep-alive', 'transfer-encoding'];

const headers = (h) =>
  [...h.entries()].filter(([k]) => !HOP_BY_HOP.includes(k.toLowerCase())).map(([k, v]) => [k.toLowerCase(), v]).sort();

const error = (e) => {
  const out = { error: e.constructor.name, message: e.message };
  if (e instanceof APIError) Object.assign(out, { status: e.status ?? null, body: e.error ?? null, headers: e.headers ? headers(e.headers) : null });
  if (e instanceof TaskFailedError) out.taskDetails = e.taskDetails;
  return out;
};

const create = (step, prompt) => {
  const { endpoint, model } = step;
  if (endpoint === 'image_to_video') {
    return client.imageToVideo.create({ model, promptImage: 'https://example.com/in.png', ratio: '1280:720', promptText: prompt });
  }
  if (endpoint === 'text_to_video') return client.textToVideo.create({ model, promptText: prompt, ratio: '1280:720' });
  if (endpoint === 'text_to_image') return client.textToImage.create({ model, promptText: prompt, ratio: '1280:720' });
  return client.generate.video.create({ configId: 'standin-router', input: { promptText: prompt } });
};

// GET /v1/tasks/{id}: the task as the SDK gives it, and the answer's status and headers
// (the SDK has read the body: the task is what it made of it).
const retrieve = async (id) => {
  const { data, response } = await client.tasks.retrieve(id).withResponse();
  return { task: data, view: { status: response.status, headers: headers(response.headers), task: data } };
};

const del = async (id) => {
  const { response } = await client.tasks.delete(id).withResponse();
  return { view: { status: response.status, headers: headers(response.headers) } };
};

async function runStep(step, prompt) {
  const results = [];
  const call = async (name, fn) => {
    try {
      const value = await fn();
      results.push({ call: name, ok: value?.view ?? value });
      return value;
    } catch (e) {
      if (!(e instanceof APIError) && !(e instanceof TaskFailedError)) throw e;
      results.push({ call: name, raised: error(e) });
      return null;
    }
  };
  let promise;
  const created = await call('create', async () => {
    promise = create(step, prompt);
    return await promise;
  });
  if (created === null) return results;
  if (step.then === 'wait') {
    await call('waitForTaskOutput', () => promise.waitForTaskOutput({ timeout: 30_000 }));
  } else if (step.then === 'delete') {
    await call('retrieve', () => retrieve(created.id));
    await call('delete', () => del(created.id));
    await call('retrieve after delete', () => retrieve(created.id));
  } else if (step.then === 'poll') {
    for (let i = 0; i < 10; i++) {
      const got = await call('retrieve', () => retrieve(created.id));
      if (got === null || TERMINAL.includes(got.task.status)) break;
    }
  }
  return results;
}

async function runPlan(planFile, outFile) {
  const plan = JSON.parse(readFileSync(planFile, 'utf8'));
  const key = (s) => `${s.n}-${s.scenario}`;
  const prompt = (s) => `node-${s.n}-${s.scenario}`;
  // The waits sleep ~6 s before their first poll: they run beside the rest.
  const waits = plan.filter((s) => s.then === 'wait').map(async (s) => [key(s), await runStep(s, prompt(s))]);
  const out = {};
  for (const s of plan.filter((s) => s.then !== 'wait')) out[key(s)] = await runStep(s, prompt(s));
  for (const [k, r] of await Promise.all(waits)) out[k] = r;
  const sorted = Object.fromEntries(Object.keys(out).sort().map((k) => [k, out[k]]));
  writeFileSync(outFile, JSON.stringify(sorted, null, 1) + '\n');
  const { VERSION } = await import('@runwayml/sdk/version.js');
  console.error(`@runwayml/sdk ${VERSION}: ${Object.values(out).flat().length} calls`);
}

async function streamWorker(w, tasks) {
  const done = [];
  const errors = [];
  for (let i = 0; i < tasks; i++) {
    try {
      const task = await client.imageToVideo.create({
        model: 'gen4_turbo', promptImage: 'https://example.com/in.png', ratio: '1280:720', promptText: `node${w}.${i}-ok`,
      });
      for (let p = 0; p < 10; p++) {
        const got = await client.tasks.retrieve(task.id);
        if (TERMINAL.includes(got.status)) break;
      }
      done.push(task.id);
    } catch (e) {
      if (!(e instanceof APIError)) throw e;
      errors.push(error(e));
    }
  }
  return { done, errors };
}

async function runStream(workers, tasks, outFile) {
  const results = await Promise.all([...Array(workers).keys()].map((w) => streamWorker(w, tasks)));
  const done = results.flatMap((r) => r.done);
  const errors = results.flatMap((r) => r.errors);
  writeFileSync(outFile, JSON.stringify({ done, errors }));
  console.error(`@runwayml/sdk stream: ${done.length} tasks done, ${errors.length} calls failed`);
  process.exit(errors.length ? 1 : 0);
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'plan' && args.length === 2) await runPlan(...args);
else if (mode === 'stream' && args.length === 3) await runStream(Number(args[0]), Number(args[1]), args[2]);
else {
  console.error('usage: node client.mjs plan PLAN_JSON OUT_JSON | stream WORKERS TASKS OUT_JSON');
  process.exit(2);
}

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CompileError } from '../../engine/compile/CompileError.js';
import { compileWorkflow } from '../../engine/compile/compileWorkflow.js';
import { renderJobs } from '../../engine/compile/renderJobs.js';
import { validateText, validateWorkflows } from '../../engine/spec/validateWorkflows.js';
import type { Workflow } from '../../engine/spec/Workflow.js';
import { workflow as workflowText } from '../harness/gitRepo.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

function workflow(spec: string, name = 'demo'): Workflow {
  const r = validateText('w.yaml', workflowText(name, spec));
  expect(r.diagnostics).toEqual([]);
  return r.workflow!;
}

describe('golden files', () => {
  it('every example renders byte for byte to the checked-in nomad-jobs/', async () => {
    const report = await validateWorkflows(['workflows'], root);
    const files = renderJobs(report.files.flatMap((f) => compileWorkflow(f.workflow!)));
    expect(files.size).toBeGreaterThan(10);
    for (const [path, content] of files) {
      expect(await readFile(`${root}nomad-jobs/${path}`, 'utf8'), path).toBe(content);
    }
  });
});

describe('a dispatched task', () => {
  it('compiles to a parameterized batch job that Nomad never retries on its own', () => {
    const wf = workflow('  defaults:\n    timeout: 2m\n  tasks:\n    - name: build_All\n      run: make ${{ params.target }}\n      env: { MODE: fast }\n      resources: { cpu: 300, memoryMB: 512 }\n      outputs: [artifact]\n  params:\n    target: { type: string, default: all }\n');
    const [job] = compileWorkflow(wf, { gitCommit: 'abc123' });
    expect(job!.id).toBe('caravan-demo-build-all');
    expect(job!.job).toEqual({
      ID: 'caravan-demo-build-all',
      Name: 'caravan-demo-build-all',
      Type: 'batch',
      Namespace: 'default',
      Region: 'global',
      Datacenters: ['*'],
      Priority: 50,
      Meta: {
        'caravan.git-commit': 'abc123',
        'caravan.spec-hash': job!.job.Meta['caravan.spec-hash'],
        'caravan.task': 'build_All',
        'caravan.workflow': 'demo',
      },
      ParameterizedJob: { Payload: 'required', MetaRequired: ['caravan_run', 'caravan_attempt'], MetaOptional: ['caravan_item'] },
      TaskGroups: [{
        Name: 'task',
        Count: 1,
        RestartPolicy: { Attempts: 0, Mode: 'fail' },
        ReschedulePolicy: { Attempts: 0, Unlimited: false },
        Tasks: [{
          Name: 'agent',
          Driver: 'raw_exec',
          Config: {
            command: 'caravan',
            // The user's command is escaped for Nomad's HCL templating; the runner's path is not.
            args: ['agent', 'shell', '--workflow', 'demo', '--task', 'build_All', '--payload', '${NOMAD_TASK_DIR}/input.json', '--timeout', '2m', '--outputs', 'artifact', '--', 'make $${{ params.target }}'],
          },
          Env: { CARAVAN_TASK: 'build_All', CARAVAN_WORKFLOW: 'demo', MODE: 'fast' },
          DispatchPayload: { File: 'input.json' },
          Resources: { CPU: 300, MemoryMB: 512 },
          KillTimeout: 10_000_000_000,
        }],
      }],
    });
    expect(job!.job.Meta['caravan.spec-hash']).toMatch(/^[0-9a-f]{16}$/);
  });

  it('keeps secret values out of the job: secrets become a Nomad Variable template, host variables a runner flag', () => {
    const wf = workflow('  tasks:\n    - name: a\n      run: deploy\n      env:\n        TOKEN: { secret: { path: caravan/prod, key: token } }\n        HOME_DIR: { fromHost: HOME }\n');
    const task = compileWorkflow(wf)[0]!.job.TaskGroups[0]!.Tasks[0]!;
    expect(task.Env).toEqual({ CARAVAN_TASK: 'a', CARAVAN_WORKFLOW: 'demo' });
    expect(task.Templates).toEqual([{
      EmbeddedTmpl: 'TOKEN={{ with nomadVar "caravan/prod" }}{{ .token }}{{ end }}\n',
      DestPath: 'secrets/caravan.env',
      Envvars: true,
      ChangeMode: 'noop',
    }]);
    expect(task.Config['args']).toContain('HOME_DIR=HOME');
    // The runner is told which variable to mask in what it reports, never its value.
    const args = task.Config['args'] as string[];
    expect(args.slice(args.indexOf('--mask-env'), args.indexOf('--mask-env') + 2)).toEqual(['--mask-env', 'TOKEN']);
  });

  it('runs containers through a prepare and a report runner around the user image', () => {
    const wf = workflow('  tasks:\n    - name: a\n      driver: docker\n      image: alpine:3.20\n      args: [echo, hi]\n');
    const tasks = compileWorkflow(wf)[0]!.job.TaskGroups[0]!.Tasks;
    expect(tasks.map((t) => [t.Name, t.Driver, t.Lifecycle?.Hook ?? 'main'])).toEqual([
      ['caravan-prepare', 'raw_exec', 'prestart'],
      ['main', 'docker', 'main'],
      ['caravan-report', 'raw_exec', 'poststop'],
    ]);
    expect(tasks[1]!.Config).toEqual({ image: 'alpine:3.20', command: '/bin/sh', args: ['/alloc/caravan/command.sh'] });
    expect(tasks[0]!.Config['args']).toEqual(['agent', 'prepare', '--workflow', 'demo', '--task', 'a', '--payload', '${NOMAD_TASK_DIR}/input.json', '--', 'echo', 'hi']);
  });

  it('a task with a compensation also compiles its undo job: the compensate command, its env over the task\'s, its own timeout', () => {
    const wf = workflow('  tasks:\n    - name: charge\n      run: charge ${{ params.order }}\n      env: { MODE: live, REGION: eu }\n      timeout: 5m\n      outputs: [payment]\n      compensate:\n        run: refund ${{ tasks.charge.outputs.payment }}\n        env: { MODE: refund }\n        timeout: 30s\n  params:\n    order: { type: string }\n');
    const jobs = compileWorkflow(wf);
    expect(jobs.map((j) => [j.id, j.kind, j.source])).toEqual([['caravan-demo-charge', 'task', 'charge'], ['caravan-demo-charge-compensate', 'compensate', 'charge']]);
    const undo = jobs[1]!.job;
    expect(undo.Meta).toMatchObject({ 'caravan.task': 'charge', 'caravan.compensates': 'charge' });
    expect(undo.ParameterizedJob).toEqual(jobs[0]!.job.ParameterizedJob);
    const task = undo.TaskGroups[0]!.Tasks[0]!;
    expect((task.Config as { args: string[] }).args).toEqual(['agent', 'shell', '--workflow', 'demo', '--task', 'charge', '--payload', '${NOMAD_TASK_DIR}/input.json', '--timeout', '30s', '--', 'refund $${{ tasks.charge.outputs.payment }}']);
    expect(task.Env).toMatchObject({ MODE: 'refund', REGION: 'eu' });
    expect(undo.TaskGroups[0]!.RestartPolicy).toEqual({ Attempts: 0, Mode: 'fail' });
  });

  it('approval gates and sub-workflows compile to nothing; pooled tasks to their pool', () => {
    const wf = workflow('  pools:\n    p: { count: 3 }\n  tasks:\n    - name: a\n      approval: {}\n    - name: b\n      workflow: { name: other }\n    - name: c\n      pool: p\n      run: echo\n');
    expect(compileWorkflow(wf).map((j) => [j.id, j.kind, j.job.Type, j.job.TaskGroups[0]!.Count])).toEqual([['caravan-demo-pool-p', 'pool', 'service', 3]]);
  });
});

describe('job IDs', () => {
  it('two names that sanitize to the same ID are an error, never merged', () => {
    const wf = workflow('  pools:\n    x: { count: 1 }\n  tasks:\n    - name: Build\n      run: a\n    - name: build\n      run: b\n    - name: pool-x\n      run: c\n    - name: uses\n      pool: x\n      run: d\n');
    let err: unknown;
    try {
      compileWorkflow(wf);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CompileError);
    expect((err as CompileError).code).toBe('COMPILE_FAILED');
    expect((err as CompileError).problems.map((p) => p.message)).toEqual([
      "task 'build' and task 'Build' both compile to Nomad job ID 'caravan-demo-build'; rename one of them",
      "pool 'x' and task 'pool-x' both compile to Nomad job ID 'caravan-demo-pool-x'; rename one of them",
    ]);
  });
});

describe('determinism', () => {
  it('compiling twice gives identical output, and the spec hash is pinned', () => {
    const text = '  tasks:\n    - name: a\n      run: echo a\n';
    const one = renderJobs(compileWorkflow(workflow(text)));
    const two = renderJobs(compileWorkflow(workflow(text)));
    expect([...one]).toEqual([...two]);
    // A changed hash for the same input means output changed for every user: bump deliberately.
    expect(compileWorkflow(workflow(text))[0]!.job.Meta['caravan.spec-hash']).toBe('7de7361a31ad6d9b');
  });

  it('changing one task changes only its job', () => {
    const before = compileWorkflow(workflow('  tasks:\n    - name: a\n      run: echo a\n    - name: b\n      run: echo b\n'));
    const after = compileWorkflow(workflow('  tasks:\n    - name: a\n      run: echo a\n    - name: b\n      run: echo B\n'));
    expect(after[0]).toEqual(before[0]);
    expect(after[1]!.job.Meta['caravan.spec-hash']).not.toBe(before[1]!.job.Meta['caravan.spec-hash']);
  });

  it('git commit is meta only: it does not change the spec hash', () => {
    const wf = workflow('  tasks:\n    - name: a\n      run: echo a\n');
    expect(compileWorkflow(wf, { gitCommit: 'aaa' })[0]!.job.Meta['caravan.spec-hash']).toBe(compileWorkflow(wf)[0]!.job.Meta['caravan.spec-hash']);
  });
});

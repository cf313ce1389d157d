import { describe, expect, it } from 'vitest';
import { crossFileDiagnostics, validateText } from '../../engine/spec/validateWorkflows.js';
import { workflow } from '../harness/gitRepo.js';

/** `line:col code message` for each diagnostic, in order. */
function check(spec: string): string[] {
  return validateText('w.yaml', workflow('demo', spec)).diagnostics.map((d) => `${d.line}:${d.col} ${d.code} ${d.message}`);
}

describe('task actions', () => {
  it('a task must do something', () => {
    expect(check('  tasks:\n    - name: a\n')).toEqual([
      "7:7 TASK_NO_ACTION task 'a' does nothing: give it run, args, http, approval, workflow or sleep, or set agent: noop",
    ]);
  });

  it('a task does exactly one thing', () => {
    expect(check('  tasks:\n    - name: a\n      run: echo\n      http: { url: "http://x" }\n')).toEqual([
      "9:7 TASK_ACTION_CONFLICT task 'a' sets run and http; a task does exactly one of run, args, http, approval, workflow or sleep",
    ]);
  });

  it('the agent type must fit the action', () => {
    expect(check('  tasks:\n    - name: a\n      agent: http\n      run: echo\n')).toEqual([
      "8:14 TASK_AGENT_MISMATCH task 'a' uses agent 'http' but sets run; the http agent takes 'http'",
    ]);
    expect(check('  tasks:\n    - name: a\n      agent: noop\n')).toEqual([]);
    expect(check('  tasks:\n    - name: a\n      agent: my-plugin\n      with: { x: 1 }\n')).toEqual([]);
  });
});

describe('finally tasks', () => {
  it('are checked like tasks, may need only each other, and read every task and the run outcome', () => {
    const ok = "  tasks:\n    - name: a\n      run: echo\n      outputs: [x]\n  onFailure:\n    - name: alert\n      run: echo ${{ run.status }}\n  finally:\n    - name: report\n      run: echo ${{ run.status }} ${{ toJSON(run.failures) }} ${{ tasks.a.outputs.x }} ${{ run.id }} ${{ run.workflow }} ${{ run.startedAt }}\n    - name: each\n      needs: [report]\n      forEach: ${{ run.failures }}\n      when: ${{ always() && run.status == 'failed' }}\n      run: echo ${{ item.task }} ${{ item.error }}\n";
    expect(check(ok)).toEqual([]);
    const bad = '  tasks:\n    - name: a\n      needs: [f]\n      run: echo ${{ run.status }}\n      compensate: { run: "undo ${{ run.failures }}" }\n  onFailure:\n    - name: z\n      needs: [f]\n      run: echo\n  finally:\n    - name: f\n      needs: [a, g]\n      run: echo\n      compensate: { run: undo }\n    - name: g\n      needs: [f]\n      forEach: ${{ run.status }}\n      run: echo\n    - name: a\n      run: echo\n';
    expect(check(bad)).toEqual([
      "8:15 NEEDS_UNKNOWN task 'a' needs unknown task 'f'; 'f' is a finally task and runs after all the main tasks",
      "9:21 EXPR_RUN_OUTCOME_TOO_EARLY in 'run.status': run.status is only known once the main tasks are over: read it in onFailure or finally tasks",
      "10:36 EXPR_RUN_OUTCOME_TOO_EARLY in 'run.failures': run.failures is only known once the main tasks are over: read it in onFailure or finally tasks",
      "13:15 NEEDS_UNKNOWN task 'z' needs unknown task 'f'; onFailure tasks run after the main tasks and may only need other onFailure tasks",
      "17:15 NEEDS_UNKNOWN task 'f' needs unknown task 'a'; finally tasks run after everything else and may only need other finally tasks",
      "17:18 DAG_CYCLE dependency cycle: f -> g -> f",
      "19:7 COMPENSATE_OUTSIDE_TASKS task 'f' is a finally task; compensate undoes main tasks when a run fails and would never run here",
      "22:16 FOREACH_NOT_LIST forEach expression 'run.status' yields a string, not a list",
      "24:13 TASK_DUPLICATE task name 'a' is already used by task #1; task names must be unique in a workflow",
    ]);
    expect(check('  tasks:\n    - { name: a, run: echo }\n  finally:\n    - { name: f, run: echo, tiemout: 1m }\n')).toEqual([
      "9:29 SCHEMA_UNKNOWN_FIELD unknown field 'tiemout' in finally task 'f'; did you mean 'timeout'?",
    ]);
  });
});

describe('needs and onFailure', () => {
  it('a task cannot need itself', () => {
    expect(check('  tasks:\n    - name: a\n      needs: [a]\n      run: echo\n')).toEqual(["8:15 NEEDS_SELF task 'a' needs itself"]);
  });

  it('onFailure tasks may read any main task but not need one', () => {
    const spec = '  tasks:\n    - name: a\n      run: echo\n      outputs: [x]\n  onFailure:\n    - name: alert\n      needs: [a]\n      run: echo ${{ tasks.a.outputs.x }} ${{ run.id }}\n';
    expect(check(spec)).toEqual([
      "12:15 NEEDS_UNKNOWN task 'alert' needs unknown task 'a'; onFailure tasks run after the main tasks and may only need other onFailure tasks",
    ]);
  });

  it('names are unique across tasks and onFailure', () => {
    expect(check('  tasks:\n    - name: a\n      run: echo\n  onFailure:\n    - name: a\n      run: echo\n')).toEqual([
      "10:13 TASK_DUPLICATE task name 'a' is already used by task #1; task names must be unique in a workflow",
    ]);
  });
});

describe('expressions', () => {
  it('compensation may read its own task, other tasks may not', () => {
    const spec = '  tasks:\n    - name: a\n      run: echo ${{ tasks.a.status }}\n      outputs: [id]\n      compensate: { run: "undo ${{ tasks.a.outputs.id }}" }\n';
    expect(check(spec)).toEqual([
      "8:21 EXPR_NOT_UPSTREAM in 'tasks.a.status': tasks.a is not available here: a task cannot read its own status or outputs",
    ]);
  });

  it('item exists only under forEach', () => {
    expect(check('  tasks:\n    - name: a\n      run: echo ${{ item }}\n')).toEqual([
      "8:21 EXPR_ITEM_OUTSIDE_FOREACH in 'item': 'item' is only defined in a task with forEach",
    ]);
  });

  it('checks properties of tasks and run', () => {
    const spec = '  tasks:\n    - name: a\n      run: echo\n    - name: b\n      needs: [a]\n      run: echo ${{ tasks.a.result }} ${{ run.secret }}\n';
    expect(check(spec)).toEqual([
      "11:21 EXPR_UNKNOWN_PROPERTY in 'tasks.a.result': tasks.a has no property 'result'; use status, outputs, exitCode, attempts",
      "11:43 EXPR_UNKNOWN_PROPERTY in 'run.secret': run has no property 'secret'; use id, workflow, commit, trigger, startedAt, attempt",
    ]);
  });

  it('when takes one expression, with or without ${{ }}', () => {
    const ok = "  tasks:\n    - name: a\n      run: echo\n    - name: b\n      needs: [a]\n      when: tasks.a.status == 'succeeded'\n      run: echo\n";
    expect(check(ok)).toEqual([]);
    const bad = "  tasks:\n    - name: a\n      run: echo\n      when: \"${{ true }} or not\"\n";
    expect(check(bad)).toEqual([
      "9:13 WHEN_NOT_SINGLE_EXPRESSION when must be one expression, such as \"${{ tasks.build.status == 'succeeded' }}\"; text around ${{ }} would make it always true",
    ]);
  });

  it('status functions go in when only, and nowhere else (file, line, column and field)', () => {
    const ok = "  tasks:\n    - name: a\n      run: echo\n    - name: b\n      needs: [a]\n      when: ${{ !failure() && !cancelled() }}\n      run: echo\n    - name: c\n      needs: [b]\n      when: always() && tasks.a.status == 'failed'\n      run: echo\n";
    expect(check(ok)).toEqual([]);
    const bad = '  tasks:\n    - name: a\n      run: echo ${{ success() }}\n      env: { S: "x ${{ format(\'{0}\', failure()) }}" }\n      forEach: ${{ always() && fromJSON(\'[1]\') }}\n';
    const r = validateText('w.yaml', workflow('demo', bad));
    expect(r.diagnostics.map((d) => `${d.file}:${d.line}:${d.col} ${d.path} ${d.code} ${d.message}`)).toEqual([
      "w.yaml:8:21 /spec/tasks/0/run EXPR_STATUS_FUNCTION_OUTSIDE_WHEN in 'success()': success() can only be used in a task's when, where it says how the tasks it needs ended",
      "w.yaml:9:24 /spec/tasks/0/env/S EXPR_STATUS_FUNCTION_OUTSIDE_WHEN in 'format('{0}', failure())': failure() can only be used in a task's when, where it says how the tasks it needs ended",
      "w.yaml:10:20 /spec/tasks/0/forEach EXPR_STATUS_FUNCTION_OUTSIDE_WHEN in 'always() && fromJSON('[1]')': always() can only be used in a task's when, where it says how the tasks it needs ended",
    ]);
    expect(check('  tasks:\n    - name: a\n      run: echo\n      when: success(1)\n')[0]).toContain('EXPR_SYNTAX');
  });

  it('warns about a when that reads a failed or skipped need without a status function: it is never true', () => {
    const spec = "  tasks:\n    - name: a\n      run: echo\n    - name: b\n      needs: [a]\n      when: ${{ tasks.a.status == 'Failed' || tasks.a.status != 'succeeded' }}\n      run: echo\n  onFailure:\n    - name: z\n      when: tasks.a.status == 'failed'\n      run: echo\n";
    expect(check(spec)).toEqual([
      "11:16 WHEN_NEEDS_STATUS_FUNCTION in 'tasks.a.status == 'Failed' || tasks.a.status != 'succeeded'': tasks.a.status != 'succeeded' is never true here: a when without a status function means success() && (...), so the task is skipped as soon as a task it needs does not succeed; add one, as in \"${{ !cancelled() && tasks.a.status != 'succeeded' }}\"",
      "11:16 WHEN_NEEDS_STATUS_FUNCTION in 'tasks.a.status == 'Failed' || tasks.a.status != 'succeeded'': tasks.a.status == 'Failed' is never true here: a when without a status function means success() && (...), so the task is skipped as soon as a task it needs does not succeed; add one, as in \"${{ !cancelled() && tasks.a.status == 'Failed' }}\"",
    ]);
  });

  it('points into a multi-line block scalar', () => {
    const spec = '  tasks:\n    - name: a\n      run: |\n        echo one\n        echo ${{ params.nope }}\n';
    expect(check(spec)).toEqual([
      "10:18 EXPR_UNKNOWN_PARAM in 'params.nope': unknown param 'nope'; the workflow declares no params",
    ]);
  });

  it('forEach accepts a literal list, an array param and fromJSON', () => {
    const spec = '  params:\n    xs: { type: array, default: [1, 2] }\n  tasks:\n    - name: a\n      forEach: [1, 2]\n      run: echo ${{ item }}\n    - name: b\n      forEach: ${{ params.xs }}\n      run: echo ${{ item }}\n    - name: c\n      forEach: "${{ fromJSON(\'[1]\') }}"\n      run: echo\n';
    expect(check(spec)).toEqual([]);
  });

  it('forEach rejects plain strings', () => {
    expect(check('  tasks:\n    - name: a\n      forEach: a,b,c\n      run: echo\n')).toEqual([
      "8:16 FOREACH_NOT_LIST forEach must be a list or a single ${{ }} expression that yields one, not the string 'a,b,c'",
    ]);
  });
});

describe('pools, params, triggers and retries', () => {
  it('a pooled task takes its driver and resources from the pool', () => {
    const spec = '  pools:\n    p: { count: 2 }\n  tasks:\n    - name: a\n      pool: p\n      driver: docker\n      run: echo\n';
    expect(check(spec)).toEqual([
      "11:7 POOL_TASK_CONFLICT task 'a' runs in pool 'p' and sets driver; driver comes from the pool's agents",
    ]);
  });

  it('param defaults must satisfy the param, and patterns must compile', () => {
    const spec = '  params:\n    q: { type: string, default: Q5, pattern: "^Q[1-4]$" }\n    n: { type: integer, default: 0, minimum: 1 }\n    r: { type: string, pattern: "(" }\n    l: { type: array, items: { type: string }, default: [a, 1] }\n  tasks:\n    - name: a\n      run: echo\n';
    expect(check(spec)).toEqual([
      "7:33 PARAM_DEFAULT_INVALID default of param 'q' 'Q5' does not match the pattern ^Q[1-4]$",
      "8:34 PARAM_DEFAULT_INVALID default of param 'n' must be at least 1, not 0",
      "9:33 PARAM_PATTERN_INVALID pattern of param 'r' is not a valid regular expression: error parsing regexp: missing closing ): `(` (patterns use RE2 syntax, matched in linear time: no lookaround, no backreferences)",
      "10:57 PARAM_DEFAULT_INVALID default of param 'l' item 1 must be a string, not number 1",
    ]);
  });

  it('cron needs five fields and must fire; globs stay inside the repository', () => {
    const spec = '  triggers:\n    - schedule: { cron: "0 0 6 * * 1" }\n    - schedule: { cron: "0 0 30 2 *" }\n    - push: { paths: ["../secrets/**", "/etc/*"] }\n  tasks:\n    - name: a\n      run: echo\n';
    expect(check(spec)).toEqual([
      "7:25 CRON_INVALID cron '0 0 6 * * 1' has 6 fields; use five (minute hour day-of-month month day-of-week) or a macro such as @daily",
      "8:25 CRON_INVALID cron '0 0 30 2 *' never fires",
      "9:23 PATH_GLOB_INVALID path glob '../secrets/**' must not contain '..'",
      "9:40 PATH_GLOB_INVALID path glob '/etc/*' must be relative to the repository root (no leading /)",
    ]);
  });

  it('maxDelay must not be shorter than delay', () => {
    expect(check('  tasks:\n    - name: a\n      run: echo\n      retry: { delay: 1m, maxDelay: 10s }\n')).toEqual([
      '9:37 RETRY_DELAY_ORDER maxDelay 10s is shorter than delay 1m',
    ]);
  });
});

describe('YAML conveniences', () => {
  it('anchors and merge keys work within the alias budget', () => {
    const spec = '  defaults:\n    retry: &r { attempts: 2 }\n  tasks:\n    - &base\n      name: a\n      run: echo\n      retry: *r\n    - <<: *base\n      name: b\n';
    expect(check(spec)).toEqual([]);
  });
});

describe('sub-workflows', () => {
  it('a workflow cannot run itself', () => {
    expect(check('  tasks:\n    - name: a\n      workflow: { name: demo }\n')).toEqual([
      "8:25 WORKFLOW_RECURSION task 'a' runs its own workflow 'demo', which would recurse forever",
    ]);
  });

  it('an unknown child workflow is a warning across files', () => {
    const parent = validateText('parent.yaml', workflow('parent', '  tasks:\n    - name: a\n      workflow: { name: child }\n'));
    expect(crossFileDiagnostics([parent]).map((d) => `${d.file}:${d.line}:${d.col} ${d.severity} ${d.code}`)).toEqual([
      'parent.yaml:8:25 warning WORKFLOW_UNKNOWN',
    ]);
    const child = validateText('child.yaml', workflow('child', '  tasks:\n    - name: a\n      run: echo\n'));
    expect(crossFileDiagnostics([parent, child])).toEqual([]);
  });
});

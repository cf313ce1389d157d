import { CaravanError } from '../errors/CaravanError.js';

export interface CompileProblem {
  workflow: string;
  /** The task or pool the problem is about. */
  source: string;
  message: string;
}

/** A valid workflow that still cannot become Nomad jobs, for example two names that collide once sanitized. */
export class CompileError extends CaravanError {
  readonly problems: readonly CompileProblem[];

  constructor(problems: CompileProblem[]) {
    super('COMPILE_FAILED', problems.map((p) => `${p.workflow}: ${p.message}`).join('\n'), { data: { problems } });
    this.name = 'CompileError';
    this.problems = problems;
  }
}

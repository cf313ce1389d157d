/**
 * Polls `check` until it holds. The limit only turns a hang into a clear failure; no test
 * asserts how long anything took through it.
 */
export async function until(what: string, check: () => boolean | Promise<boolean>, limitMs = 30_000, pollMs = 20): Promise<void> {
  const end = Date.now() + limitMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/**
 * Polls `check` until it holds. The limit only turns a hang into a clear failure; no test
 * asserts how long anything took through it. A check that throws ends the wait with its
 * error (a server that exited while being waited for). `what` may be a function, read only
 * when the wait fails, to say more than a name (a server's last output).
 */
export async function until(what: string | (() => string), check: () => boolean | Promise<boolean>, limitMs = 30_000, pollMs = 20): Promise<void> {
  const end = Date.now() + limitMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Whether `url` answers 2xx with a JSON body that `accept` likes; false while nothing listens. */
export async function answers(url: string, accept: (body: unknown) => boolean = () => true, init: RequestInit = {}): Promise<boolean> {
  try {
    const res = await fetch(url, init);
    return res.ok && accept(await res.json());
  } catch {
    // Refused or reset: the server is not up yet, which is what the caller is waiting out.
    return false;
  }
}

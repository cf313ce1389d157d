import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  /** Path and query, as sent. */
  url: string;
  authorization: string | undefined;
  body: unknown;
}

export interface IssueComment {
  id: number;
  body: string;
  user: { login: string; type: string };
}

/**
 * The part of GitHub's REST API that a pull-request comment needs (list with Link-header
 * pagination, create, update), served on a free local port, with an in-memory comment list.
 * Every request is recorded; one without the expected token is answered 401 as GitHub does.
 */
export class GithubApiServer {
  readonly requests: RecordedRequest[] = [];
  readonly comments: IssueComment[] = [];
  private nextId = 9001;
  private server: Server | undefined;
  url = '';

  constructor(private readonly options: { owner: string; repo: string; issue: number; token: string; perPage?: number }) {}

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      void this.handle(req).then(({ status, body, headers }) => {
        res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
        res.end(JSON.stringify(body));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server === undefined ? resolve() : this.server.close(() => resolve())));
  }

  /** Another user's comment, as a busy pull request has many. */
  addComment(body: string, login = 'reviewer'): IssueComment {
    const c = { id: this.nextId++, body, user: { login, type: 'User' } };
    this.comments.push(c);
    return c;
  }

  private json(c: IssueComment): Record<string, unknown> {
    return { ...c, html_url: `https://github.example/${this.options.owner}/${this.options.repo}/pull/${this.options.issue}#issuecomment-${c.id}` };
  }

  private async handle(req: IncomingMessage): Promise<{ status: number; body: unknown; headers?: Record<string, string> }> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const url = req.url ?? '';
    this.requests.push({ method: req.method ?? '', url, authorization: req.headers.authorization, body: text === '' ? undefined : JSON.parse(text) as unknown });
    if (req.headers.authorization !== `token ${this.options.token}`) return { status: 401, body: { message: 'Bad credentials' } };
    const { owner, repo, issue } = this.options;
    const u = new URL(url, 'http://x');
    const list = `/repos/${owner}/${repo}/issues/${issue}/comments`;
    if (req.method === 'GET' && u.pathname === list) {
      const perPage = Math.min(Number(u.searchParams.get('per_page') ?? 30), this.options.perPage ?? 100);
      const page = Number(u.searchParams.get('page') ?? 1);
      const slice = this.comments.slice((page - 1) * perPage, page * perPage);
      const last = Math.max(1, Math.ceil(this.comments.length / perPage));
      const headers: Record<string, string> = page < last ? { link: `<${this.url}${list}?per_page=${perPage}&page=${page + 1}>; rel="next", <${this.url}${list}?per_page=${perPage}&page=${last}>; rel="last"` } : {};
      return { status: 200, body: slice.map((c) => this.json(c)), headers };
    }
    if (req.method === 'POST' && u.pathname === list) {
      const c = { id: this.nextId++, body: String((JSON.parse(text) as { body: unknown }).body), user: { login: 'github-actions[bot]', type: 'Bot' } };
      this.comments.push(c);
      return { status: 201, body: this.json(c) };
    }
    const m = new RegExp(`^/repos/${owner}/${repo}/issues/comments/(\\d+)$`).exec(u.pathname);
    if (req.method === 'PATCH' && m !== null) {
      const c = this.comments.find((x) => x.id === Number(m[1]));
      if (c === undefined) return { status: 404, body: { message: 'Not Found' } };
      c.body = String((JSON.parse(text) as { body: unknown }).body);
      return { status: 200, body: this.json(c) };
    }
    return { status: 404, body: { message: 'Not Found' } };
  }
}

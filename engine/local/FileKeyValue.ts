import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { checkRegistryKey, type KeyValue } from '../run/Registry.js';

interface Entry {
  value: string;
  index: number;
}

/**
 * The registry's key-value part in files, for the embedded default (no Consul): one JSON file
 * per key under a directory that outlives the process (.git/caravan/kv). Check-and-set holds
 * within one process, which is all the embedded default runs (one controller); writes are a
 * temporary file and a rename, so a crash never leaves half a value.
 */
export class FileKeyValue implements KeyValue {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly root: string) {}

  async getKey(key: string): Promise<{ value: string; index: number } | undefined> {
    checkRegistryKey(key);
    return this.read(key);
  }

  putKey(key: string, value: string, options: { cas?: number } = {}): Promise<boolean> {
    checkRegistryKey(key);
    // Serialised: a check-and-set is a read and a write that nothing may come between.
    const next = this.chain.then(async () => {
      const current = await this.read(key);
      if (options.cas !== undefined && (current?.index ?? 0) !== options.cas) return false;
      const path = this.path(key);
      await mkdir(dirname(path), { recursive: true });
      const entry: Entry = { value, index: (current?.index ?? 0) + 1 };
      await writeFile(`${path}.tmp`, JSON.stringify(entry));
      await rename(`${path}.tmp`, path);
      return true;
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  async deleteKey(key: string): Promise<void> {
    checkRegistryKey(key);
    await rm(this.path(key), { force: true });
  }

  async listKeys(prefix: string): Promise<string[]> {
    checkRegistryKey(prefix, 'prefix');
    const out: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      let names;
      try {
        names = await readdir(dir, { withFileTypes: true });
      } catch (e) {
        // A directory nobody wrote to holds no keys.
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw e;
      }
      for (const n of names) {
        const p = join(dir, n.name);
        if (n.isDirectory()) await walk(p);
        else if (n.name.endsWith('.json')) {
          const key = relative(this.root, p).split(sep).join('/').slice(0, -'.json'.length);
          if (key.startsWith(prefix)) out.push(key);
        }
      }
    };
    await walk(this.root);
    return out.sort();
  }

  private path(key: string): string {
    return join(this.root, `${key}.json`);
  }

  private async read(key: string): Promise<Entry | undefined> {
    let text: string;
    try {
      text = await readFile(this.path(key), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    return JSON.parse(text) as Entry;
  }
}

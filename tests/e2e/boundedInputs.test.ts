import { execFileSync } from 'node:child_process';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli } from '../harness/cli.js';
import { tempRepo, workflow } from '../harness/gitRepo.js';

/** Files a hostile commit can hold that are not files to read: each is refused unread, at once. */
describe('files that are not regular files inside the repository are refused, not read', () => {
  it('caravan validate: a link to /dev/zero, a device, a FIFO, a link out of the repository', async () => {
    const dir = await tempRepo({ 'ok.yaml': workflow('ok', '  tasks:\n    - { name: a, run: echo }\n') });
    await symlink('/dev/zero', join(dir, 'workflows', 'zero.yaml'));
    await symlink('/etc/passwd', join(dir, 'workflows', 'passwd.yaml'));
    execFileSync('mkfifo', [join(dir, 'workflows', 'fifo.yaml')]);
    // A device inside the repository itself (as root, like CI): /dev/zero's numbers.
    execFileSync('mknod', [join(dir, 'workflows', 'dev.yaml'), 'c', '1', '5']);
    // Named one by one (a directory walk passes over what is not a file at all).
    for (const [file, why] of [['zero.yaml', 'it is a symbolic link to /dev/zero, outside the repository; not read'], ['dev.yaml', 'it is a device, not a regular file; not read'], ['fifo.yaml', 'it is a FIFO, not a regular file; not read'], ['passwd.yaml', 'it is a symbolic link to /etc/passwd, outside the repository; not read']]) {
      const r = await cli(dir, 'validate', `workflows/${file}`);
      expect({ file, code: r.code, out: r.out }).toEqual({ file, code: 2, out: `workflows/${file}:1:1: error FILE_REFUSED: ${why}\n1 file checked: 1 error (1 of 1 file invalid)\n` });
    }
    // The whole directory: the link out of the repository is found and refused; nothing of it is quoted.
    const all = await cli(dir, 'validate');
    expect(all.code).toBe(2);
    expect(all.out).toContain('workflows/passwd.yaml:1:1: error FILE_REFUSED: it is a symbolic link to /etc/passwd');
    expect(all.out).not.toContain('root:');
  });

  it('caravan approvals check: links to /dev/zero and /etc/passwd, a device, a FIFO, a directory and a large file are invalid approvals (exit 2, not 70)', async () => {
    const dir = await tempRepo({ 'ok.yaml': workflow('ok', '  tasks:\n    - { name: a, run: echo }\n') });
    const run = join(dir, 'approvals', '20261121-120000-a1b2c3');
    await mkdir(run, { recursive: true });
    await symlink('/dev/zero', join(run, 'zero.yaml'));
    await symlink('/etc/passwd', join(run, 'passwd.yaml'));
    execFileSync('mkfifo', [join(run, 'fifo.yaml')]);
    execFileSync('mknod', [join(run, 'dev.yaml'), 'c', '1', '5']);
    await mkdir(join(run, 'dir.yaml'));
    await writeFile(join(run, 'big.yaml'), 'x'.repeat(70_000));
    const r = await cli(dir, 'approvals', 'check');
    expect(r.code).toBe(2);
    expect(r.out.split('\n').filter((l) => l.includes('error')).sort()).toEqual([
      'approvals/20261121-120000-a1b2c3/big.yaml:1:1: error FILE_TOO_LARGE: it is 70000 bytes, over the limit of 65536; not read',
      'approvals/20261121-120000-a1b2c3/dev.yaml:1:1: error FILE_REFUSED: it is a device, not a regular file; not read',
      'approvals/20261121-120000-a1b2c3/dir.yaml:1:1: error FILE_REFUSED: it is a directory, not a regular file; not read',
      'approvals/20261121-120000-a1b2c3/fifo.yaml:1:1: error FILE_REFUSED: it is a FIFO, not a regular file; not read',
      'approvals/20261121-120000-a1b2c3/passwd.yaml:1:1: error FILE_REFUSED: it is a symbolic link to /etc/passwd, outside the repository; not read',
      'approvals/20261121-120000-a1b2c3/zero.yaml:1:1: error FILE_REFUSED: it is a symbolic link to /dev/zero, outside the repository; not read',
    ]);
    expect(r.out).not.toContain('root:');
  });
});

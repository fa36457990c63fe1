// The reference harness for freehold.unixfs: import a file or a folder with npm's
// ipfs-unixfs-importer (pinned in package.json) and report the root CID; optionally write a
// CARv1 of the DAG with @ipld/car's CarWriter.
//
//   node import.mjs --profile unixfs-v1-2025 [--options '{"chunkSize":1024,...}']
//                   [--car out.car] [--order order.txt] [--blockstore DIR] PATH
//
// --profile passes the importer's own `profile` option (IPIP-499 names). --options instead (or
// on top) passes explicit importer options; `chunkSize` and `maxChildrenPerNode` are turned into
// `chunker: fixedSize({chunkSize})` and `layout: balanced({maxChildrenPerNode})`.
//
// Folders are walked depth first, the entries of each folder in the byte order of their UTF-8
// names; files are passed as {path, content: fs stream}, and a folder is passed as an entry of
// its own only when it is empty (a folder with contents is made by the importer from its
// files' paths), so that no block is stored that the DAG does not reference. Paths are relative
// to PATH and `wrapWithDirectory: true` makes PATH the root. Symlinks and other special files
// are refused, as freehold.unixfs.import_path refuses them.
//
// Block order: the blockstore records each CID once, at its first put, and the CAR has the
// blocks in that order with the root CID as its only root. `fileImportConcurrency: 1` is
// passed (it does not change any CID) so that the files' blocks are not interleaved with each
// other in an order that depends on I/O timing; within a file the importer's own order is kept.
//
// --blockstore DIR also stores each block (at its first put) in an FsBlockstore (npm
// blockstore-fs, the filesystem blockstore js-ipfs/helia keep blocks in, what `ipfs add` does)
// at DIR, and at the end fsyncs every file and folder under DIR (blockstore-fs writes a temp file
// and renames it, without fsync), so the blocks are on disk when it exits, as a vault's shares
// are. For benchmarks (benchmarks/publish_vault.py); without it nothing of this is loaded.
//
// Prints one JSON line: {"root": CID, "blocks": N, "bytes": total block bytes, "car": path|null}
// (with --blockstore, and "blockstore": DIR).

import fs from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'
import { CarWriter } from '@ipld/car/writer'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

function parseArgs (argv) {
  const args = { profile: null, options: {}, car: null, order: null, blockstore: null, target: null }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--profile') args.profile = argv[++i]
    else if (a === '--options') args.options = JSON.parse(argv[++i])
    else if (a === '--car') args.car = argv[++i]
    else if (a === '--order') args.order = argv[++i]
    else if (a === '--blockstore') args.blockstore = argv[++i]
    else if (args.target == null) args.target = a
    else throw new Error(`unexpected argument ${a}`)
  }
  if (args.target == null) throw new Error('usage: import.mjs [--profile P] [--options JSON] [--car F] PATH')
  return args
}

// A blockstore that keeps the first put of each CID, in put order (bytes only when a CAR is wanted),
// and with a backing store (--blockstore) puts each first put there too.
class RecordingBlockstore {
  constructor (keepBytes, backing = null) {
    this.keepBytes = keepBytes
    this.backing = backing
    this.blocks = new Map()
    this.bytes = 0
  }

  put (cid, bytes) {
    const key = cid.toString()
    if (!this.blocks.has(key)) {
      this.blocks.set(key, { cid, bytes: this.keepBytes ? bytes : null })
      this.bytes += bytes.byteLength
      if (this.backing != null) return this.backing.put(cid, bytes).then(() => cid)
    }
    return cid
  }

  has (cid) { return this.blocks.has(cid.toString()) }

  get (cid) {
    const b = this.blocks.get(cid.toString())
    if (b == null || b.bytes == null) throw new Error('not found')
    return b.bytes
  }
}

const byUtf8 = (a, b) => Buffer.compare(Buffer.from(a.name, 'utf8'), Buffer.from(b.name, 'utf8'))

function * walk (dir, rel) {
  const entries = fs.readdirSync(dir, { withFileTypes: true }).sort(byUtf8)
  for (const e of entries) {
    const full = path.join(dir, e.name)
    const p = rel === '' ? e.name : `${rel}/${e.name}`
    if (e.isDirectory()) {
      if (fs.readdirSync(full).length === 0) yield { path: p }
      else yield * walk(full, p)
    } else if (e.isFile()) {
      yield { path: p, content: fs.createReadStream(full, { highWaterMark: 1 << 20 }) }
    } else {
      throw new Error(`refusing ${full}: not a regular file or folder`)
    }
  }
}

// fsync every file and folder under dir (folders after their contents).
async function syncTree (dir) {
  for (const e of await fs.promises.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, e.name)
    if (e.isDirectory()) await syncTree(full)
    else await syncPath(full)
  }
  await syncPath(dir)
}

async function syncPath (p) {
  const handle = await fs.promises.open(p, 'r')
  try { await handle.sync() } finally { await handle.close() }
}

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const opts = { ...args.options }
  if (args.profile) opts.profile = args.profile
  if (opts.chunkSize != null) { opts.chunker = fixedSize({ chunkSize: opts.chunkSize }); delete opts.chunkSize }
  if (opts.maxChildrenPerNode != null) {
    opts.layout = balanced({ maxChildrenPerNode: opts.maxChildrenPerNode })
    delete opts.maxChildrenPerNode
  }
  if (opts.fileImportConcurrency == null) opts.fileImportConcurrency = 1
  let backing = null
  if (args.blockstore != null) {
    const { FsBlockstore } = await import('blockstore-fs')
    backing = new FsBlockstore(args.blockstore)
    await backing.open()
  }
  const store = new RecordingBlockstore(args.car != null, backing)
  const stat = fs.statSync(args.target)
  let source
  if (stat.isDirectory()) {
    source = walk(args.target, '')
    opts.wrapWithDirectory = true
  } else if (stat.isFile()) {
    source = [{ content: fs.createReadStream(args.target, { highWaterMark: 1 << 20 }) }]
  } else {
    throw new Error(`refusing ${args.target}: not a regular file or folder`)
  }
  let last = null
  for await (const entry of importer(source, store, opts)) last = entry
  const root = last.cid
  if (args.order) {
    fs.writeFileSync(args.order, [...store.blocks.keys()].join('\n') + '\n')
  }
  if (args.car) {
    const { writer, out } = CarWriter.create([root])
    const done = new Promise((resolve, reject) => {
      const file = fs.createWriteStream(args.car)
      Readable.from(out).pipe(file).on('finish', resolve).on('error', reject)
    })
    for (const { cid, bytes } of store.blocks.values()) await writer.put({ cid, bytes })
    await writer.close()
    await done
  }
  const result = { root: root.toString(), blocks: store.blocks.size, bytes: store.bytes, car: args.car }
  if (backing != null) {
    await backing.close()
    await syncTree(backing.path)
    result.blockstore = backing.path
  }
  process.stdout.write(JSON.stringify(result) + '\n')
}

main().catch((err) => { process.stderr.write(`${err.stack ?? err}\n`); process.exit(1) })

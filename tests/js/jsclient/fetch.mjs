// Real IPFS clients against freehold's trustless gateway (run by freehold.testing.jsclient).
//
//   node fetch.mjs job.json
//
// job.json: {"gateway": "http://127.0.0.1:PORT", "token": "..." | null, "tasks": [...]}, each task
//   {"kind": "verified-fetch", "resource": "ipfs://CID/path", "out": FILE}
//       @helia/verified-fetch over Helia with @helia/http: its one trustless gateway is ours, no
//       delegated routers, no libp2p; it fetches raw blocks (?format=raw), checks each against
//       its CID and walks the UnixFS DAG itself; the file's bytes are written to FILE.
//   {"kind": "car", "cid": CID, "path": "a/b" | "", "query": "dag-scope=all", "offset": N,
//    "length": N, "out": FILE}
//       a plain fetch of /ipfs/CID/path?format=car&QUERY, read with @ipld/car, every block's
//       sha2-256 checked against its CID, then the path exported from those blocks alone with
//       ipfs-unixfs-exporter (bytes offset..offset+length if given) and written to FILE.
// One JSON line per task goes to stdout: {"ok": true, ...} or {"ok": false, "error": "..."}.
// Every fetch that is not to 127.0.0.1 is refused, so nothing leaves the machine.

import { readFile, writeFile } from 'node:fs/promises'
import { withHTTP } from '@helia/http'
import { createVerifiedFetchWithHelia } from '@helia/verified-fetch'
import { CarBlockIterator } from '@ipld/car'
import { MemoryBlockstore } from 'blockstore-core'
import { createHeliaLight } from 'helia'
import { exporter } from 'ipfs-unixfs-exporter'
import { sha256 } from 'multiformats/hashes/sha2'

const job = JSON.parse(await readFile(process.argv[2], 'utf8'))
const requests = []
const realFetch = globalThis.fetch
globalThis.fetch = async (resource, init) => {
  const url = new URL(resource instanceof Request ? resource.url : String(resource))
  if (url.hostname !== '127.0.0.1') {
    throw new Error(`refused a fetch off this machine: ${url}`)
  }
  requests.push(url.pathname + url.search)
  return realFetch(resource, init)
}

function authorized (headers) {
  const out = new Headers(headers ?? {})
  if (job.token != null) {
    out.set('Authorization', `Bearer ${job.token}`)
  }
  return out
}

async function collect (iterable) {
  const parts = []
  let size = 0
  for await (const part of iterable) {
    parts.push(part)
    size += part.byteLength
  }
  const out = new Uint8Array(size)
  let at = 0
  for (const part of parts) {
    out.set(part, at)
    at += part.byteLength
  }
  return out
}

let verifiedFetch = null
async function getVerifiedFetch () {
  if (verifiedFetch == null) {
    const helia = withHTTP(createHeliaLight(), {
      delegatedRouters: [],
      recursiveGateways: [job.gateway],
      allowInsecure: true,
      allowLocal: true,
      transformRequestInit: (init) => ({ ...init, headers: authorized(init.headers) })
    })
    // helia 7.1.15's Routing.findProviders never finishes when every router is a fallback
    // router (no router ends, so its queue never goes idle): one ordinary router that finds
    // nothing lets it go on to the fallback router, which yields our gateway.
    helia.addRouter({ name: 'no-other-providers', findProviders: async function * () {} })
    await helia.start()
    verifiedFetch = await createVerifiedFetchWithHelia(helia)
  }
  return verifiedFetch
}

async function runVerifiedFetch (task) {
  const vf = await getVerifiedFetch()
  const res = await vf(task.resource, { signal: AbortSignal.timeout(30000) })
  if (!res.ok) {
    return { ok: false, status: res.status, error: await res.text() }
  }
  const bytes = new Uint8Array(await res.arrayBuffer())
  await writeFile(task.out, bytes)
  return { ok: true, status: res.status, size: bytes.byteLength }
}

async function runCar (task) {
  const path = task.path ? `/${task.path}` : ''
  const query = task.query ? `&${task.query}` : ''
  const res = await fetch(`${job.gateway}/ipfs/${task.cid}${path}?format=car${query}`, {
    headers: authorized({ Accept: 'application/vnd.ipld.car' }),
    signal: AbortSignal.timeout(30000)
  })
  if (!res.ok) {
    return { ok: false, status: res.status, error: await res.text() }
  }
  const contentType = res.headers.get('content-type')
  const cars = await CarBlockIterator.fromIterable(res.body)
  const roots = (await cars.getRoots()).map(String)
  const store = new MemoryBlockstore()
  const order = []
  for await (const { cid, bytes } of cars) {
    if (cid.multihash.code !== sha256.code) {
      throw new Error(`unexpected hash in ${cid}`)
    }
    const digest = await sha256.digest(bytes)
    if (Buffer.compare(Buffer.from(digest.digest), Buffer.from(cid.multihash.digest)) !== 0) {
      throw new Error(`block ${cid} does not match its CID`)
    }
    order.push(cid.toString())
    await store.put(cid, bytes)
  }
  const entry = await exporter(`${task.cid}${path}`, store)
  const options = {}
  if (task.offset != null) options.offset = task.offset
  if (task.length != null) options.length = task.length
  let size = null
  if (entry.type === 'file' || entry.type === 'raw') {
    const bytes = await collect(entry.content(options))
    await writeFile(task.out, bytes)
    size = bytes.byteLength
  }
  return { ok: true, status: res.status, contentType, roots, blocks: order, type: entry.type, size }
}

// A client that gives up without settling its promise (verified-fetch does when every gateway
// refused a block) leaves Node's event loop empty: 'beforeExit' then ends the task.
let stalled = null
process.on('beforeExit', () => stalled?.({ ok: false, error: 'the client stopped without an answer' }))

const kinds = { 'verified-fetch': runVerifiedFetch, car: runCar }
for (const task of job.tasks) {
  const before = requests.length
  let result
  try {
    result = await Promise.race([kinds[task.kind](task), new Promise(resolve => { stalled = resolve })])
  } catch (err) {
    result = { ok: false, error: `${err?.name ?? 'Error'}: ${err?.message ?? err}` }
  }
  result.requests = requests.slice(before)
  process.stdout.write(JSON.stringify(result) + '\n')
}
if (verifiedFetch != null) {
  await verifiedFetch.stop()
}
process.exit(0)

// A js-ipfs node for freehold's tests: ipfs-core on a given repo, offline, with the kubo-style
// RPC (ipfs-http-server's HttpApi) on 127.0.0.1:PORT. Usage: node daemon.mjs REPO PORT
// (PORT 0 picks a free port). Prints one line "READY <port>" once the API listens; stops
// cleanly on SIGTERM or SIGINT (the repo lock is released, so a restart on REPO works).
import { create } from 'ipfs-core'
import { HttpApi } from 'ipfs-http-server'

const [repo, portArg] = process.argv.slice(2)
if (!repo || portArg === undefined) {
  console.error('usage: node daemon.mjs REPO PORT')
  process.exit(2)
}
const port = Number(portArg)

// No swarm listener, no bootstrap peers, no discovery, no delegates, no preload: nothing
// leaves loopback. "offline" keeps libp2p from starting at all.
const config = {
  Addresses: {
    Swarm: [],
    Announce: [],
    NoAnnounce: [],
    API: `/ip4/127.0.0.1/tcp/${port}`,
    Gateway: '',
    RPC: '',
    Delegates: []
  },
  Bootstrap: [],
  Discovery: { MDNS: { Enabled: false }, webRTCStar: { Enabled: false } },
  Pubsub: { Enabled: false }
}

const ipfs = await create({
  repo,
  offline: true,
  silent: true,
  start: true,
  preload: { enabled: false, addresses: [] },
  config,
  init: { algorithm: 'Ed25519', emptyRepo: true },
  repoAutoMigrate: false
})
// On a restart the repo's stored config wins over `config`: set the API address again.
await ipfs.config.set('Addresses.API', `/ip4/127.0.0.1/tcp/${port}`)
await ipfs.config.set('Bootstrap', [])

const api = new HttpApi(ipfs)
await api.start()
const actual = api._apiServers[0].info.port
process.stdout.write(`READY ${actual}\n`)

let stopping = false
async function stop () {
  if (stopping) return
  stopping = true
  try {
    await api.stop()
    await ipfs.stop()
  } finally {
    process.exit(0)
  }
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)

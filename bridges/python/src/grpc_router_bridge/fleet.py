"""Discovery of a router fleet through the register stream, as the Rust
bridge's ``bridge/fleet.rs``: a router with a fleet (the daemon's
``[cluster]``) lists its replicas in ``Welcome`` and ``Peers``; the bridge
keeps one registration per replica, telling replicas apart by the
``router_id`` of their ``Welcome``, dials every listed address it holds no
registration with, names the replicas it holds in every ``Hello`` (a replica
it holds refuses a second registration, which a balancer could send it), and
drains the registration of an address no longer listed. A
router without a fleet lists none and the bridge keeps to its endpoints."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from . import wire

if TYPE_CHECKING:  # pragma: no cover
    from .bridge import Bridge

_LOGGER = logging.getLogger("grpc_router_bridge")

#: The most router replicas a bridge registers with through discovery; a
#: longer list is cut (sorted by address) and the cut logged.
MAX_REPLICAS = 64


class Discovery:
    """What the bridge knows of the fleet, shared by all its registrations.
    ``listed`` names a registration's role: ``None`` for a configured
    endpoint (perhaps a balancer), else the listed address it dials."""

    def __init__(self) -> None:
        #: The router ids this bridge holds a registration with, each with the
        #: token of the registration holding it.
        self.held: Dict[str, int] = {}
        self._next_claim = 0
        #: The latest non-empty list a router sent, by address, sorted.
        self.peers: List[wire.RouterPeer] = []
        #: The router id a listed address answered with.
        self.learned: Dict[str, str] = {}
        self._changed = asyncio.Event()

    def _bump(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _id_of(self, peer: wire.RouterPeer) -> Optional[str]:
        return peer.router_id or self.learned.get(peer.address)

    def wanted(self, listed: Optional[str]) -> bool:
        """Whether a registration in this role is worth dialling now."""
        if not self.peers:
            return True
        if listed is None:
            return any((i := self._id_of(p)) is None or i not in self.held for p in self.peers)
        for peer in self.peers:
            if peer.address == listed:
                router_id = self._id_of(peer)
                return router_id is None or router_id not in self.held
        return True

    async def wait_until_wanted(self, listed: Optional[str], stop: asyncio.Event) -> bool:
        """Waits until :meth:`wanted`; False when ``stop`` is set first."""
        while not stop.is_set():
            if self.wanted(listed):
                return True
            changed = asyncio.ensure_future(self._changed.wait())
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({changed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                stopped.cancel()
        return False

    def claim(self, welcome: wire.Welcome, listed: Optional[str]) -> Optional[Tuple[str, int]]:
        """Takes the replica a ``Welcome`` came from (a claim to
        :meth:`release`); ``None`` from a router without a fleet (its id says
        nothing). A registration that reached a replica another one holds (two
        dials in flight at once) replaced that one on the router, which closes
        it: the claim passes to the newer."""
        if not welcome.peers or not welcome.router_id:
            return None
        if listed is not None:
            self.learned[listed] = welcome.router_id
        self._next_claim += 1
        self.held[welcome.router_id] = self._next_claim
        self.offer(welcome.peers)
        self._bump()
        return welcome.router_id, self._next_claim

    def release(self, claim: Optional[Tuple[str, int]]) -> None:
        """The registration holding ``claim`` ended."""
        if claim is not None:
            router_id, token = claim
            if self.held.get(router_id) == token:
                del self.held[router_id]
            self._bump()

    def held_ids(self) -> List[str]:
        """The router ids held, for ``Hello.registered_with``."""
        return sorted(self.held)

    def offer(self, peers: Sequence[wire.RouterPeer]) -> None:
        """A router's list (``Welcome`` or ``Peers``); an empty one is ignored."""
        if not peers:
            return
        merged: Dict[str, wire.RouterPeer] = {}
        for peer in peers:
            known = merged.get(peer.address)
            if known is None:
                merged[peer.address] = wire.RouterPeer(peer.router_id, peer.address)
            elif not known.router_id:
                known.router_id = peer.router_id
        listed = [merged[a] for a in sorted(merged)]
        if listed == self.peers:
            return
        self.peers = listed
        self.learned = {a: i for a, i in self.learned.items() if a in merged}
        self._bump()

    def addresses(self) -> Tuple[List[str], int]:
        """The listed addresses to dial (at most :data:`MAX_REPLICAS`) and how
        many are listed."""
        return [p.address for p in self.peers[:MAX_REPLICAS]], len(self.peers)

    async def changed(self) -> None:
        """Returns at the next change."""
        await self._changed.wait()


async def follow(bridge: "Bridge") -> None:
    """Keeps a registration task per listed address (but the configured
    endpoints') until the bridge stops; drains one whose address leaves."""
    from .session import run_endpoint

    discovery = bridge.discovery
    scheme = "https" if bridge.options.tls is not None else "http"
    loop = asyncio.get_running_loop()
    tasks: Dict[str, Tuple[asyncio.Event, "asyncio.Task[None]"]] = {}
    reported = 0
    try:
        while not bridge._stopping.is_set():
            addresses, listed = discovery.addresses()
            if listed > MAX_REPLICAS and listed != reported:
                _LOGGER.warning(
                    "the router lists %d replicas; a bridge registers with at most %d (the first by address)",
                    listed,
                    MAX_REPLICAS,
                )
            reported = listed
            wanted = {
                f"{scheme}://{a}": a for a in addresses if f"{scheme}://{a}" not in bridge.options.endpoints
            }
            for endpoint in [e for e in tasks if e not in wanted]:
                _LOGGER.info("router replica %s no longer listed; draining its registration", endpoint)
                tasks.pop(endpoint)[0].set()
            for endpoint, address in sorted(wanted.items()):
                if endpoint not in tasks:
                    _LOGGER.info("router replica %s listed; registering with it", endpoint)
                    stop = asyncio.Event()
                    tasks[endpoint] = (stop, loop.create_task(run_endpoint(bridge, endpoint, stop, listed=address)))
            changed = asyncio.ensure_future(discovery.changed())
            stopping = asyncio.ensure_future(bridge._stopping.wait())
            try:
                await asyncio.wait({changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                stopping.cancel()
    finally:
        for stop, _ in tasks.values():
            stop.set()
        if tasks:
            await asyncio.gather(*(task for _, task in tasks.values()), return_exceptions=True)

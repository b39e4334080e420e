"""`Client`: the controller's side of the protocol, built so that it can never wedge the control loop.

A DEALER socket (not REQ: a REQ socket whose peer died blocks forever, libzmq #1227) with LINGER=0 and
a deadline on every request. Every request carries a sequence number and a reply to an older one is
dropped, so one missed deadline costs one request: the socket is kept, because throwing it away after
a single late reply (a scheduler hiccup on the server) would cost a re-handshake and the backoff below,
that is ten or more periods at 1 kHz. After `rebuild_after` consecutive misses with no reply at all (a late
reply that does arrive proves the server alive and restarts the count), lasting at least `rebuild_silence_s`,
the server is taken to be gone and the socket is thrown away (Lazy Pirate): its queued requests die with it. Rebuilds are
rate-limited by a bounded exponential backoff (10 ms -> 1 s by default); while backing off, `act`
fails at once instead of waiting, so the caller can hold a safe action within its own period. After a rebuild, or when a
restarted server no longer knows us, the handshake is repeated; it may span several requests' deadlines (a fresh
TCP connection plus `hello` took 0.45-0.75 ms here, the first `act` after it another ~0.5 ms: together more than one
1 kHz period), so a handshake that misses a request's deadline is left pending on its socket, each request meanwhile
failing with DeadlineMissed at its own deadline, and only one pending longer than `handshake_timeout_s` drops the
socket. Cutting it off at every deadline instead locked a 1 kHz loop out: every retry rebuilt the socket, missed
again and doubled the backoff up to 1 s (31,877 of 60,000 ticks lost on an idle machine, BENCHMARKS.md).
`handshakes` counts successful handshakes, so a control loop can tell a fresh session (the only
thing that lets its watchdog recover from DAMP / SAFE_STOP) from a reply on the old one.
With `curve=` the socket authenticates to a CurveZMQ server (see `security/keys.py`).
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Self

import numpy as np
import zmq

from spaars_robot.errors import SpaarsError
from spaars_robot.runtime import protocol as p


class ServerUnavailable(SpaarsError):
    """No reply can be had right now (backing off after a failure); hold a safe action and retry later."""


class DeadlineMissed(ServerUnavailable):
    """The server did not answer within the request's deadline (the Client's docstring says when it rebuilds)."""


@dataclass(frozen=True)
class ClientCurve:
    """The controller's CurveZMQ identity: its own secret key file and the server's public key file."""

    secret_key_file: Path
    server_public_key_file: Path


class Client:
    """Talk to an ActionServer at `endpoint` with `schema` (must match the bundle's, checked at handshake)."""

    def __init__(self, endpoint: str, schema: p.Schema, *, timeout_s: float = 0.05, bundle_sha256: str | None = None,
                 name: str = "spaars-client", backoff_min_s: float = 0.01, backoff_max_s: float = 1.0,
                 context: zmq.Context | None = None, curve: ClientCurve | None = None,
                 rebuild_after: int = 3, rebuild_silence_s: float = 0.1, handshake_timeout_s: float = 1.0) -> None:
        if rebuild_after < 1:
            raise ValueError("rebuild_after must be >= 1")
        if not rebuild_silence_s >= 0:
            raise ValueError("rebuild_silence_s must be >= 0")
        if not handshake_timeout_s > 0:
            raise ValueError("handshake_timeout_s must be > 0")
        self.endpoint = endpoint
        self.rebuild_after, self.rebuild_silence_s = rebuild_after, rebuild_silence_s
        self.handshake_timeout_s = handshake_timeout_s
        self.schema = schema
        self.timeout_s = timeout_s
        self.bundle_sha256 = bundle_sha256
        self.name = name
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self.welcome: p.Welcome | None = None
        self.timeouts = 0
        self.consecutive_misses = 0
        self._last_heard = time.monotonic()  # last reply of any kind, stale ones included
        self.sockets_built = 0  # 1 + number of rebuilds
        self.handshakes = 0  # successful handshakes (first one + every re-handshake)
        self.stale_replies = 0  # replies to an earlier request seen on this socket and dropped
        self.curve = curve
        if curve is not None:  # read (and check) the key files once, not on every rebuild
            from spaars_robot.security.keys import load_curve_keypair

            self._curve_keys = (load_curve_keypair(curve.secret_key_file, need_secret=True),
                                load_curve_keypair(curve.server_public_key_file))
        self._ctx = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None
        self._poller = zmq.Poller()
        self._seq = 0
        self._backoff_s = 0.0
        self._next_attempt = 0.0
        self._hello_since: float | None = None  # when the pending hello on this socket was sent
        self._hello_seq = 0
        # one routing id for every socket this client builds: the server keys sessions by it, so a rebuilt socket
        # takes over its own session slot (ROUTER_HANDOVER) instead of leaving a dead one to fill the server's
        # 64-session cap (a 1 kHz loop rebuilt 128 times in 20 s here and was refused as session_limit).
        # Random and never sent to other clients, so no one else can take it over; a leading 0 byte is libzmq's.
        self._routing_id = b"\x01" + secrets.token_bytes(15)
        self._obs = np.zeros(schema.obs_dim, dtype=np.float32)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._drop_socket()

    def connect(self, timeout_s: float = 1.0) -> p.Welcome:
        """Handshake now (instead of lazily on the first `act`); raises HandshakeRefused on a mismatch."""
        self._ensure_welcome(time.monotonic() + timeout_s)
        assert self.welcome is not None
        return self.welcome

    def forget_session(self) -> None:
        """Make the next request start with a fresh handshake (a new server session: fresh safety history)."""
        self.welcome = None

    def act(self, obs: np.ndarray, timeout_s: float | None = None,
            watchdog: p.WatchdogReport | None = None, outcome: p.Outcome | None = None) -> p.ActionReply:
        """Send one observation, return the server's reply, or raise ServerUnavailable/DeadlineMissed in time.

        `watchdog` reports this controller's watchdog state to the server for its telemetry; `outcome` the
        reward and termination of the step into `obs`, so a server recording holds training data.
        """
        obs = np.asarray(obs)
        if obs.shape != (self.schema.obs_dim,):
            raise SpaarsError(f"observation shape {obs.shape}, schema says ({self.schema.obs_dim},)")
        self._obs[:] = obs
        reply = self._exchange(lambda seq: p.Act(seq, self._obs, watchdog, outcome), timeout_s)
        if not isinstance(reply, p.ActionReply) or reply.action.shape != (self.schema.action_dim,):
            raise p.ServerError(p.MALFORMED, f"expected an action of shape ({self.schema.action_dim},), got {reply}")
        return reply

    def reset(self, timeout_s: float | None = None) -> None:
        """Tell the server a new episode starts (its gate/support latches go back to the initial state)."""
        self._exchange(p.Reset, timeout_s)

    def _exchange(self, make: Callable[[int], p.Message], timeout_s: float | None) -> p.Message:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        for _ in range(2):  # a second try only after the server forgot us (restart): re-handshake, resend
            self._ensure_welcome(deadline)
            self._seq += 1
            reply = self._roundtrip(make(self._seq), deadline, self._seq)
            if isinstance(reply, p.ErrorReply) and reply.code == p.UNKNOWN_CLIENT:
                self.welcome = None
                continue
            if isinstance(reply, p.ErrorReply):
                raise p.ServerError(reply.code, f"server error {reply.code}: {reply.message}")
            return reply
        raise p.ServerError(p.UNKNOWN_CLIENT, "server forgot this client twice in one request")

    def _ensure_welcome(self, deadline: float) -> None:
        """Handshake unless this socket has a session; a hello still unanswered at `deadline` stays pending."""
        if self.welcome is not None and self._socket is not None:
            return
        socket = self._get_socket()
        if self._hello_since is None:
            self._seq += 1
            self._hello_seq = self._seq
            self._send(socket, p.Hello(schema=self.schema, client=self.name, bundle_sha256=self.bundle_sha256,
                                       seq=self._hello_seq))
            self._hello_since = time.monotonic()
        reply = self._await_reply(socket, deadline, self._hello_seq, unnumbered_ok=True)
        if reply is None:
            waited = time.monotonic() - self._hello_since
            if waited >= self.handshake_timeout_s:
                self._fail(f"no welcome from {self.endpoint} within {self.handshake_timeout_s:g} s")
            self._fail(f"handshake with {self.endpoint} pending for {waited * 1e3:.1f} ms", keep_socket=True)
        self._hello_since = None
        if isinstance(reply, p.ErrorReply):
            if reply.code in p.REFUSALS:
                raise p.HandshakeRefused(reply.code, f"server refused handshake ({reply.code}): {reply.message}")
            raise p.ServerError(reply.code, f"handshake failed ({reply.code}): {reply.message}")
        if not isinstance(reply, p.Welcome):
            raise p.ServerError(p.MALFORMED, f"expected welcome, got {type(reply).__name__}")
        if reply.version[0] != p.PROTOCOL_MAJOR:
            raise p.HandshakeRefused(p.VERSION_MISMATCH, f"server speaks protocol {reply.version}")
        self.welcome = reply
        self.handshakes += 1

    def _roundtrip(self, msg: p.Message, deadline: float, seq: int) -> p.Message:
        socket = self._get_socket()
        self._send(socket, msg)
        reply = self._await_reply(socket, deadline, seq)
        if reply is None:
            self._fail(f"no reply from {self.endpoint} within the deadline")
        return reply

    def _send(self, socket: zmq.Socket, msg: p.Message) -> None:
        try:
            socket.send(p.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            self._fail("send queue full")

    def _await_reply(self, socket: zmq.Socket, deadline: float, seq: int,
                     unnumbered_ok: bool = False) -> p.Message | None:
        """The reply to request `seq` if it arrives by `deadline`, dropping stale ones; else None.

        Stale: any other seq, including none at all (a welcome to a hello sent on a socket thrown away reaches
        the rebuilt one, which has the same routing id). `unnumbered_ok`: a hello's reply from a 1.2 server,
        which does not echo the seq."""
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._poller.poll(max(1, int(remaining * 1000 + 0.999))):
                continue
            reply = p.decode(socket.recv())
            # any reply, a late one included, proves the server alive: the misses before it were a slow server,
            # not a gone one (rebuilding for them cost a 1 kHz loop 10 ms per rebuild)
            self.consecutive_misses = 0
            self._last_heard = time.monotonic()
            reply_seq = getattr(reply, "seq", None)
            if reply_seq != seq and not (unnumbered_ok and reply_seq is None):
                self.stale_replies += 1
                continue
            self._backoff_s = 0.0
            return reply
        return None

    def _get_socket(self) -> zmq.Socket:
        if self._socket is not None:
            return self._socket
        if time.monotonic() < self._next_attempt:
            raise ServerUnavailable(f"{self.endpoint}: backing off for {self._next_attempt - time.monotonic():.3f} s")
        socket = self._ctx.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.ROUTING_ID, self._routing_id)
        socket.setsockopt(zmq.IPV6, 1)  # so tcp://[::1]:PORT connects; IPv4 endpoints are unaffected
        socket.setsockopt(zmq.RECONNECT_IVL, 10)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, int(self.backoff_max_s * 1000))
        if self.curve is not None:
            mine, server = self._curve_keys
            socket.curve_secretkey, socket.curve_publickey = mine.secret, mine.public
            socket.curve_serverkey = server.public
        socket.connect(self.endpoint)
        self._poller.register(socket, zmq.POLLIN)
        self._socket = socket
        self.sockets_built += 1
        return socket

    def _fail(self, why: str, keep_socket: bool = False) -> NoReturn:
        """Count the miss; after `rebuild_after` in a row drop the socket and back off; raise DeadlineMissed.

        In a row means with no reply at all in between, and for at least `rebuild_silence_s`: at 1 kHz three
        misses are 3 ms, which a VM's scheduling hiccup lasts (116 needless rebuilds in 20 s on an idle SCHED_FIFO
        run here), and each rebuild costs its backoff and a handshake. Without a session (a failed handshake) the
        socket is dropped at once, unless `keep_socket`: a hello still pending within `handshake_timeout_s`.
        """
        self.timeouts += 1
        self.consecutive_misses += 1
        gone = (self.consecutive_misses >= self.rebuild_after
                and time.monotonic() - self._last_heard >= self.rebuild_silence_s)
        if not keep_socket and (gone or self.welcome is None):
            self._drop_socket()
            self._backoff_s = min(max(2 * self._backoff_s, self.backoff_min_s), self.backoff_max_s)
            self._next_attempt = time.monotonic() + self._backoff_s
        raise DeadlineMissed(why)

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._poller.unregister(self._socket)
            self._socket.close(linger=0)
            self._socket = None
        self.welcome = None
        self._hello_since = None

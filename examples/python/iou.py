#!/usr/bin/env python3
"""An IOU application on Syncline's ledger API, in Python with grpcio.

alice (on participant 1) issues IOUs, transfers each to bob (on participant 2) and archives
every other one again, while a thread follows bob's updates on participant 2. Every command
has a unique command id; after an error that leaves the outcome open (UNAVAILABLE: a passive
or restarting replica; DEADLINE_EXCEEDED; ABORTED) the same command is submitted again with
the same command id, to the next endpoint, so the ledger's deduplication makes it take effect
exactly once. At the end the application checks what bob saw against what alice did and
exits 1 if they differ.

When the participants check access tokens, give one (--token, --token-file or the
SYNCLINE_LEDGER_TOKEN environment variable): it is sent as `authorization: Bearer <JWT>` with
every call, and must let --user act as alice, read as bob and allocate parties (admin).

When the participants serve TLS, give the CA of their certificates (--ca-cert, or the
SYNCLINE_CA_CERT environment variable): every endpoint is then reached over TLS.

    python3 examples/python/iou.py --p1 http://127.0.0.1:4021,http://127.0.0.1:4031 \
        --p2 http://127.0.0.1:4041 --rounds 5
    python3 examples/python/iou.py --ca-cert certs/ca.pem --p1 https://127.0.0.1:6001 \
        --p2 https://127.0.0.1:6011
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_stubs  # noqa: E402

RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}
# A broken stream (a replica went away) ends with one of these; it is resumed elsewhere.
RESUME = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED}


def error_id(e):
    """Canton's error id from a ledger API error message: `ID(category,correlation): cause`."""
    details = e.details() or ""
    head = details.split("(", 1)[0]
    return head if head and head.isupper() and "(" in details else e.code().name


class Participant:
    """A participant's ledger API at one or more endpoints (replicas, or HAProxy)."""

    def __init__(self, name, urls, pb, grpc_pb, token=None, wait=60.0, ca=None):
        self.name, self.pb, self.wait = name, pb, wait
        # The access token goes with every call (none: the participant does not check tokens).
        self.metadata = [("authorization", f"Bearer {token}")] if token else None
        targets = [u.split("://", 1)[-1] for u in urls.split(",") if u.strip()]
        self.endpoints = []
        for t in targets:
            # TLS checking the server's certificate against the CA (its name: the target's host).
            ch = grpc.secure_channel(t, grpc.ssl_channel_credentials(root_certificates=ca)) if ca else grpc.insecure_channel(t)
            self.endpoints.append(
                {
                    "target": t,
                    "parties": grpc_pb["admin"].PartyManagementServiceStub(ch),
                    "commands": grpc_pb["commands"].CommandServiceStub(ch),
                    "completions": grpc_pb["completions"].CommandCompletionServiceStub(ch),
                    "updates": grpc_pb["updates"].UpdateServiceStub(ch),
                    "state": grpc_pb["state"].StateServiceStub(ch),
                }
            )
        self.current = 0

    def call(self, service, method, request, timeout=10.0, failover=True):
        """A unary call, moving to the next endpoint while they answer UNAVAILABLE (unless
        failover is False: then the caller sees every error)."""
        give_up = time.monotonic() + self.wait
        while True:
            e = self.endpoints[self.current]
            try:
                return getattr(e[service], method)(request, timeout=timeout, metadata=self.metadata)
            except grpc.RpcError as err:
                if not failover or err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > give_up:
                    raise
                self.current = (self.current + 1) % len(self.endpoints)
                time.sleep(0.2)

    def stream(self, service, method, request):
        """Open a server stream on the current endpoint (the caller resumes on errors)."""
        return getattr(self.endpoints[self.current][service], method)(request, metadata=self.metadata)

    def next_endpoint(self):
        self.current = (self.current + 1) % len(self.endpoints)


class App:
    def __init__(self, args, pb):
        self.args, self.pb = args, pb
        self.user = args.user
        self.resubmissions = 0
        # Each participant's ledger end when the run began: completions of this run come after.
        self.begin = {}

    def allocate(self, p, hint):
        try:
            r = p.call("parties", "AllocateParty", self.pb["admin"].AllocatePartyRequest(party_id_hint=hint))
            return r.party_details.party
        except grpc.RpcError as e:
            if error_id(e) == "PARTY_ALREADY_EXISTS":
                return hint
            raise

    def wait_known(self, p, parties):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            known = p.call("parties", "ListKnownParties", self.pb["admin"].ListKnownPartiesRequest())
            if set(parties) <= {d.party for d in known.party_details}:
                return
            time.sleep(0.2)
        raise SystemExit(f"error: {p.name} does not know {parties} after 30s")

    def submit(self, p, act_as, command_id, command):
        """Submit-and-wait until the command is accepted (its transaction) or definitely rejected
        (raises), resubmitting the same command id after UNAVAILABLE/DEADLINE_EXCEEDED/ABORTED."""
        c = self.pb["commands"]
        commands = c.Commands(user_id=self.user, command_id=command_id, act_as=act_as, commands=[command])
        give_up, attempts = time.monotonic() + self.args.command_timeout, 0
        while True:
            attempts += 1
            try:
                r = p.call("commands", "SubmitAndWaitForTransaction",
                           c.SubmitAndWaitForTransactionRequest(commands=commands), timeout=15.0, failover=False)
                return r.transaction
            except grpc.RpcError as e:
                eid = error_id(e)
                if eid == "DUPLICATE_COMMAND" and attempts > 1:
                    # Command ids are unique per run: an earlier attempt of ours was accepted.
                    return self.accepted_earlier(p, act_as, command_id)
                if e.code() not in RETRY or time.monotonic() > give_up:
                    raise
                self.resubmissions += 1
                if attempts == 1:
                    print(f"  {command_id}: {eid}, submitting it again (same command id)", flush=True)
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    p.next_endpoint()
                time.sleep(0.2)

    def accepted_earlier(self, p, act_as, command_id):
        """The transaction of command_id's accepted completion (since the run began)."""
        end = p.call("state", "GetLedgerEnd", self.pb["state"].GetLedgerEndRequest()).offset
        req = self.pb["completions"].CompletionStreamRequest(user_id=self.user, parties=act_as,
                                                             begin_exclusive=self.begin[p.name])
        stream = p.stream("completions", "CompletionStream", req)
        try:
            for item in stream:
                kind = item.WhichOneof("completion_response")
                done = item.completion.offset if kind == "completion" else item.offset_checkpoint.offset
                if kind == "completion" and item.completion.command_id == command_id and item.completion.status.code == 0:
                    f = self.pb["updates"].TransactionFilter(parties=act_as)
                    r = p.call("updates", "GetUpdateById",
                               self.pb["updates"].GetUpdateByIdRequest(update_id=item.completion.update_id, filter=f))
                    return r.transaction
                if done >= end:
                    break
        finally:
            stream.cancel()
        raise SystemExit(f"error: {command_id} was a duplicate but no accepted completion of it was found")


def created(tx):
    return [e.created for e in tx.events if e.WhichOneof("event") == "created"]


class Follower(threading.Thread):
    """Follows `party`'s transactions on participant `p` from `offset`, resuming after the last
    offset on another endpoint when the stream breaks."""

    def __init__(self, p, pb, party, offset):
        super().__init__(daemon=True)
        self.p, self.pb, self.party, self.offset = p, pb, party, offset
        self.transactions, self.stopped, self.error, self.stream = [], threading.Event(), None, None
        self.lock = threading.Lock()

    def run(self):
        while not self.stopped.is_set():
            req = self.pb["updates"].GetUpdatesRequest(
                begin_exclusive=self.offset, filter=self.pb["updates"].TransactionFilter(parties=[self.party]))
            try:
                self.stream = self.p.stream("updates", "GetUpdates", req)
                for u in self.stream:
                    with self.lock:
                        self.transactions.append(u.transaction)
                        self.offset = u.transaction.offset
            except grpc.RpcError as e:
                if self.stopped.is_set():
                    return
                if e.code() not in RESUME:
                    self.error = f"{e.code().name}: {e.details()}"
                    return
                self.p.next_endpoint()
                time.sleep(0.2)

    def stop(self):
        self.stopped.set()
        if self.stream is not None:
            self.stream.cancel()


def load_stubs(out_dir):
    gen_stubs.generate(out_dir)
    sys.path.insert(0, out_dir)
    from syncline.ledger.v1 import (admin_pb2, admin_pb2_grpc, commands_pb2, commands_pb2_grpc, completions_pb2,
                                    completions_pb2_grpc, state_pb2, state_pb2_grpc, updates_pb2, updates_pb2_grpc)
    pb = {"admin": admin_pb2, "commands": commands_pb2, "completions": completions_pb2, "state": state_pb2,
          "updates": updates_pb2}
    grpc_pb = {"admin": admin_pb2_grpc, "commands": commands_pb2_grpc, "completions": completions_pb2_grpc,
               "state": state_pb2_grpc, "updates": updates_pb2_grpc}
    return pb, grpc_pb


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--p1", required=True, help="participant 1's endpoints (alice), comma-separated")
    ap.add_argument("--p2", required=True, help="participant 2's endpoints (bob), comma-separated")
    ap.add_argument("--rounds", type=int, default=5, help="IOUs to issue and transfer")
    ap.add_argument("--alice", default="alice")
    ap.add_argument("--bob", default="bob")
    ap.add_argument("--user", default="iou-example", help="the application's user id")
    ap.add_argument("--command-timeout", type=float, default=90.0,
                    help="seconds to keep resubmitting one command")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds to pause between rounds")
    ap.add_argument("--stubs", help="generate the stubs here (default: a temporary directory)")
    ap.add_argument("--token", default=os.environ.get("SYNCLINE_LEDGER_TOKEN"),
                    help="access token (JWT) for participants that check tokens (default: $SYNCLINE_LEDGER_TOKEN)")
    ap.add_argument("--token-file", help="a file holding the access token")
    ap.add_argument("--ca-cert", default=os.environ.get("SYNCLINE_CA_CERT"),
                    help="PEM file with the CA of the participants' TLS certificates: connect over TLS")
    args = ap.parse_args()
    ca = None
    if args.ca_cert:
        with open(args.ca_cert, "rb") as f:
            ca = f.read()
    token = args.token
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()

    with tempfile.TemporaryDirectory(prefix="syncline-stubs-") as tmp:
        pb, grpc_pb = load_stubs(args.stubs or tmp)
        app = App(args, pb)
        p1 = Participant("participant 1", args.p1, pb, grpc_pb, token, ca=ca)
        p2 = Participant("participant 2", args.p2, pb, grpc_pb, token, ca=ca)
        alice, bob = app.allocate(p1, args.alice), app.allocate(p2, args.bob)
        app.wait_known(p1, [alice, bob])
        app.wait_known(p2, [alice, bob])
        print(f"parties: {alice} on participant 1, {bob} on participant 2", flush=True)
        app.begin[p1.name] = p1.call("state", "GetLedgerEnd", pb["state"].GetLedgerEndRequest()).offset

        start = p2.call("state", "GetLedgerEnd", pb["state"].GetLedgerEndRequest()).offset
        follower = Follower(p2, pb, bob, start)
        follower.start()

        run = uuid.uuid4().hex[:12]
        c = pb["commands"]
        transfers, kept = [], set()
        for i in range(args.rounds):
            iou = {"issuer": alice, "owner": alice, "amount": 10 + i, "run": run}
            create = c.Command(create=c.CreateCommand(template_id="Iou", create_arguments=json.dumps(iou),
                                                      signatories=[alice]))
            tx = app.submit(p1, [alice], f"iou-{run}-{i}-create", create)
            cid = created(tx)[0].contract_id
            iou["owner"] = bob
            transfer = c.Command(exercise=c.ExerciseCommand(
                contract_id=cid, choice="Transfer", consuming=True,
                creates=[c.CreateCommand(template_id="Iou", create_arguments=json.dumps(iou), signatories=[alice],
                                         observers=[bob])]))
            tx = app.submit(p1, [alice], f"iou-{run}-{i}-transfer", transfer)
            bobs = created(tx)[0].contract_id
            transfers.append(tx.update_id)
            line = f"round {i}: created {cid[:16]}, transferred to {bob} as {bobs[:16]} (offset {tx.offset})"
            if i % 2 == 1:
                archive = c.Command(archive=c.ArchiveCommand(contract_id=bobs))
                tx = app.submit(p1, [alice], f"iou-{run}-{i}-archive", archive)
                line += f", archived (offset {tx.offset})"
            else:
                kept.add(bobs)
            print(line, flush=True)
            time.sleep(args.pause)

        # bob's view: every transfer (and archive) seen once, in offset order; his ACS holds
        # exactly the IOUs not archived.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with follower.lock:
                seen = [t.update_id for t in follower.transactions]
            if set(transfers) <= set(seen) or follower.error:
                break
            time.sleep(0.2)
        time.sleep(1)
        follower.stop()
        with follower.lock:
            txs = list(follower.transactions)
        acs = p2.stream("state", "GetActiveContracts",
                        pb["state"].GetActiveContractsRequest(filter=pb["updates"].TransactionFilter(parties=[bob])))
        active = {r.created_event.contract_id for r in acs
                  if json.loads(r.created_event.create_arguments).get("run") == run}
        offsets = [t.offset for t in txs]
        problems = []
        if follower.error:
            problems.append(f"the update stream failed: {follower.error}")
        if [u for u in transfers if u not in {t.update_id for t in txs}]:
            problems.append("bob did not see every transfer")
        if offsets != sorted(set(offsets)):
            problems.append(f"bob's updates are not in offset order once each: {offsets}")
        if active != kept:
            problems.append(f"bob's active IOUs {sorted(active)} differ from those kept {sorted(kept)}")
        summary = {"rounds": args.rounds, "bob_saw": len(txs), "bob_active": len(active),
                   "resubmissions": app.resubmissions, "ok": not problems}
        print(json.dumps(summary), flush=True)
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except gen_stubs.StubError as e:
        sys.exit(f"error: {e}")
    except grpc.RpcError as e:
        # Ledger API messages start with their error id already.
        details = str(e.details())
        sys.exit(f"error: {details if details.startswith(error_id(e) + '(') else e.code().name + ': ' + details}")

"""A minimal fedopt client written from proto/README.md alone (not from the C
sources), with Python's ssl and Debian's protobuf. It joins a real round over
mutual TLS, checks the model's tensor table, answers with a delta (in the
codec the server asks for, when it is one it offered) and reports the
server's UpdateResult. It also plays the hostile cases of the server's
admission rules.

Usage: third_party_client.py PB2_DIR HOST PORT CA CERT KEY MODE [ARGS]
  join N_EXAMPLES ROUNDS [overclaim]
                              ROUNDS honest rounds, then (overclaim) one claiming 1000x
                              its examples; prints one line per UpdateResult
  silent                      handshake, then nothing: expects Error ETIMEDOUT
  bigframe                    announces a 1 MiB frame before Hello: expects Error ETOOBIG
  pin CONNS                   CONNS connections each announce a 60 KiB frame before Hello
                              and send half of it; prints how many were refused with
                              ETOOBIG and how many are still held open
Exit status 0 when the server behaved as the README says, 1 otherwise.
"""
import socket
import ssl
import struct
import sys
import time
import zlib

sys.path.insert(0, sys.argv[1])
import fedopt_pb2 as pb  # generated at test time by protoc --python_out

HOST, PORT, CA, CERT, KEY, MODE = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
MAX_FRAME = 4 * 1024 * 1024 + 1024  # README: fedopt uses 4 MiB + 1 KiB


def connect():
    # README, Transport: TLS 1.2 only, ECDHE + AEAD suites, mutual TLS, server name checked.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    ctx.load_verify_locations(CA)
    ctx.load_cert_chain(CERT, KEY)
    raw = socket.create_connection((HOST, PORT), timeout=30)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        got = s.recv(n - len(buf))
        if not got:
            raise EOFError("connection closed")
        buf += got
    return buf


def recv(s):
    (n,) = struct.unpack(">I", recv_exact(s, 4))
    env = pb.Envelope()
    env.ParseFromString(recv_exact(s, n))
    return env


def send(s, **kw):
    env = pb.Envelope(**kw)
    data = env.SerializeToString()
    s.sendall(struct.pack(">I", len(data)) + data)


def send_tensor(s, purpose, round_id, data, codec=None, num_values=0):
    # README, Tensors: TensorBegin, chunks at consecutive offsets, TensorEnd with zlib's CRC-32.
    chunk = 1 << 20
    begin = pb.TensorBegin(purpose=purpose, round_id=round_id, total_bytes=len(data), chunk_bytes=chunk)
    if codec is not None:
        begin.codec = codec
        begin.num_values = num_values
    send(s, tensor_begin=begin)
    for off in range(0, len(data), chunk):
        send(s, tensor_chunk=pb.TensorChunk(offset=off, data=data[off:off + chunk]))
    send(s, tensor_end=pb.TensorEnd(crc32=zlib.crc32(data) & 0xFFFFFFFF))


def recv_tensor(s, want_bytes):
    data, crc = bytearray(), None
    while True:
        env = recv(s)
        kind = env.WhichOneof("msg")
        if kind == "heartbeat":
            continue
        if kind == "tensor_begin":
            assert env.tensor_begin.total_bytes == want_bytes, env
        elif kind == "tensor_chunk":
            assert env.tensor_chunk.offset == len(data)
            data += env.tensor_chunk.data
        elif kind == "tensor_end":
            crc = env.tensor_end.crc32
            break
        else:
            raise RuntimeError("unexpected %s in a transfer" % kind)
    if zlib.crc32(bytes(data)) & 0xFFFFFFFF != crc:
        raise RuntimeError("model CRC mismatch")
    return bytes(data)


def check_table(offer):
    # README: tensors in buffer order, byte offsets, dtype float32, shapes that
    # add up to num_params. docs/models.md: logreg is fc.weight [C, D], fc.bias [C].
    off = 0
    for t in offer.tensors:
        assert t.dtype == "float32" and t.offset == off, t
        n = 1
        for d in t.shape:
            n *= d
        off += 4 * n
    assert off == 4 * offer.num_params, "table covers %d bytes, model has %d" % (off, 4 * offer.num_params)
    if offer.model == "logreg":
        names = [(t.name, list(t.shape)) for t in offer.tensors]
        assert names == [("fc.weight", [10, 784]), ("fc.bias", [10])], names
    return ", ".join("%s%s" % (t.name, list(t.shape)) for t in offer.tensors)


def f16_bytes(values):
    # README, Update compression: binary16, nearest even (struct's 'e' rounds so).
    return b"".join(struct.pack("<e", v) for v in values)


def join(examples, rounds, overclaim):
    s = connect()
    send(s, hello=pb.Hello(protocol_version=1, protocol_minor=1, client_name="py", software_version="py-0",
                           models=["logreg"], num_examples=examples, max_frame=MAX_FRAME,
                           codecs=[pb.CODEC_F16]))
    env = recv(s)
    assert env.WhichOneof("msg") == "welcome", env
    print("welcome: protocol 1.%d, identity %s" % (env.welcome.protocol_minor, env.welcome.peer_identity))
    assert env.welcome.protocol_minor == 1
    ok = True
    for r in range(rounds + overclaim):
        while True:
            env = recv(s)
            kind = env.WhichOneof("msg")
            if kind == "heartbeat":
                send(s, heartbeat=pb.Heartbeat(unix_ms=int(time.time() * 1000)))
                continue
            break
        assert kind == "task_offer", env
        offer = env.task_offer
        print("offer: round %d, %s, %d params: %s; codec %s" % (offer.round_id, offer.model, offer.num_params,
              check_table(offer), pb.Codec.Name(offer.codec)))
        recv_tensor(s, 4 * offer.num_params)
        # A small delta: each value 2^-10 * (i mod 7 - 3), exact in binary16.
        delta = [((i % 7) - 3) / 1024.0 for i in range(offer.num_params)]
        claim = examples if r < rounds else examples * 1000
        send(s, update=pb.Update(round_id=offer.round_id, weight=claim, num_examples=claim, train_loss=1.0,
                                 train_accuracy=0.5, steps=1, train_seconds=0.1))
        if offer.codec == pb.CODEC_F16:
            send_tensor(s, pb.TENSOR_DELTA, offer.round_id, f16_bytes(delta), pb.CODEC_F16, offer.num_params)
        else:
            send_tensor(s, pb.TENSOR_DELTA, offer.round_id, struct.pack("<%df" % len(delta), *delta))
        while True:
            env = recv(s)
            if env.WhichOneof("msg") == "heartbeat":
                continue
            break
        assert env.WhichOneof("msg") == "update_result", env
        u = env.update_result
        print("UpdateResult: round %d %s %s (code %s: %s) weight %g" % (
            u.round_id, "accepted" if u.accepted else "refused", pb.ResultReason.Name(u.reason),
            pb.Code.Name(u.code), u.message, u.weight))
        want = pb.RESULT_ACCEPTED if r < rounds else pb.RESULT_WEIGHT_CLAIM
        ok = ok and u.reason == want and u.accepted == (want == pb.RESULT_ACCEPTED)
    send(s, bye=pb.Bye(reason="done"))
    s.close()
    return ok


def expect_error(s, code):
    try:
        while True:
            env = recv(s)
            if env.WhichOneof("msg") == "error":
                print("error: %s: %s" % (pb.Code.Name(env.error.code), env.error.message))
                return env.error.code == code
    except (EOFError, ssl.SSLError, OSError) as e:
        print("closed without an Error: %s" % e)
        return False


def pin(conns):
    # Each connection announces a 60 KiB frame (under the 64 KiB limit before
    # Hello) and sends half of it, then holds on.
    held, refused = [], 0
    payload = b"\0" * (30 * 1024)
    for i in range(conns):
        try:
            s = connect()
            s.sendall(struct.pack(">I", 60 * 1024) + payload)
            held.append(s)
        except (OSError, ssl.SSLError) as e:
            print("connection %d failed: %s" % (i, e))
    time.sleep(1.0)
    still, other = [], {}
    for s in held:
        s.setblocking(False)  # what the server said by now is in the socket
        try:
            env_hdr = s.recv(4)
            if not env_hdr:
                still.append(None)
                continue
            (n,) = struct.unpack(">I", env_hdr + recv_exact(s, 4 - len(env_hdr)))
            env = pb.Envelope()
            env.ParseFromString(recv_exact(s, n))
            if env.WhichOneof("msg") == "error" and env.error.code == pb.ETOOBIG:
                refused += 1
            else:
                k = "%s %s" % (env.WhichOneof("msg"), pb.Code.Name(env.error.code) if env.HasField("error") else "")
                other[k] = other.get(k, 0) + 1
        except (ssl.SSLWantReadError, BlockingIOError):
            still.append(s)
        except (OSError, ssl.SSLError, EOFError) as e:
            k = type(e).__name__
            other[k] = other.get(k, 0) + 1
    print("pin: %d connections, %d refused with ETOOBIG, %d still held%s" % (
        conns, refused, len([x for x in still if x]),
        "".join("; %d %s" % (v, k) for k, v in sorted(other.items()))))
    sys.stdout.flush()
    if len(sys.argv) > 9:
        time.sleep(float(sys.argv[9]))  # hold them while the caller measures
    for s in held:
        s.close()
    return True


if MODE == "join":
    sys.exit(0 if join(int(sys.argv[8]), int(sys.argv[9]), len(sys.argv) > 10 and sys.argv[10] == "overclaim") else 1)
elif MODE == "silent":
    sys.exit(0 if expect_error(connect(), pb.ETIMEDOUT) else 1)
elif MODE == "bigframe":
    s = connect()
    s.sendall(struct.pack(">I", 1 << 20) + b"\0" * 1024)
    sys.exit(0 if expect_error(s, pb.ETOOBIG) else 1)
elif MODE == "pin":
    sys.exit(0 if pin(int(sys.argv[8])) else 1)
sys.exit(2)

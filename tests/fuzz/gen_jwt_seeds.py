#!/usr/bin/python3
"""Seeds for fuzz_jwks_idtoken, from the committed THROWAWAY test keys in
tests/fuzz/keys/ (created on the first run; they sign fuzz seeds and nothing
else, and are published on purpose). Writes:
  tests/fuzz/corpus/fuzz_jwks_idtoken/  t-*: "T" + an ID token, j-*: "J" + a JWKS
  tests/fuzz/fuzz_jwks_idtoken_data.h   the JWKS the harness trusts, the claims
                                        it expects, and the signing input
                                        (header.payload) of every token signed
                                        here: no other token may validate.
Deterministic except for the signatures (PS256 and ECDSA are randomised).

    /usr/bin/python3 tests/fuzz/gen_jwt_seeds.py
"""
import base64
import json
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = os.path.join(HERE, "keys")
OUT = os.path.join(HERE, "corpus", "fuzz_jwks_idtoken")
NOW = 1767225600  # 2026-01-01T00:00:00Z, the harness's fixed clock
ISSUER = "https://idms.test"
CLIENT_ID = "mcgw-test"
NONCE = "n-0S6_WzA2Mj"


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def uint(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return b64u(n.to_bytes(size, "big"))


def key(name, make):
    path = os.path.join(KEYS, name)
    if not os.path.exists(path):
        k = make()
        with open(path, "wb") as f:
            f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), None)


def jwk_rsa(k, kid, **extra):
    n = k.public_key().public_numbers()
    return {**dict(kty="RSA", kid=kid, use="sig", n=uint(n.n), e=uint(n.e)), **extra}


def jwk_ec(k, kid, **extra):
    n = k.public_key().public_numbers()
    crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[k.curve.name]
    size = (k.curve.key_size + 7) // 8
    return {**dict(kty="EC", kid=kid, use="sig", crv=crv, x=uint(n.x, size), y=uint(n.y, size)),
            **extra}


def sign(k, alg, header, claims):
    h = b64u(json.dumps(dict(alg=alg, typ="JWT", **header), separators=(",", ":")).encode())
    c = b64u(json.dumps(claims, separators=(",", ":")).encode())
    si = (h + "." + c).encode()
    if alg == "RS256":
        sig = k.sign(si, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "PS256":
        sig = k.sign(si, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    elif alg == "ES256":
        r, s = decode_dss_signature(k.sign(si, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        sig = b""
    return si.decode(), si.decode() + "." + b64u(sig)


def claims(**over):
    c = dict(iss=ISSUER, sub="alice@example.test", aud=CLIENT_ID, exp=NOW + 3600, iat=NOW - 60,
             nonce=NONCE, mcptt_id="sip:alice@mcptt.test")
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def c_str(s):
    return json.dumps(s)  # a JSON string is a valid C string literal for ASCII


def main():
    os.makedirs(KEYS, exist_ok=True)
    os.makedirs(OUT, exist_ok=True)
    rsa_k = key("throwaway-rsa-2048.pem", lambda: rsa.generate_private_key(65537, 2048))
    ec_k = key("throwaway-ec-p256.pem", lambda: ec.generate_private_key(ec.SECP256R1()))
    other = ec.generate_private_key(ec.SECP256R1())  # not in the JWKS
    small = rsa.generate_private_key(65537, 1024)
    p384 = ec.generate_private_key(ec.SECP384R1())

    trusted = dict(keys=[jwk_rsa(rsa_k, "rsa-1"), jwk_ec(ec_k, "ec-1")])
    signed, tokens = [], {}

    def tok(name, k, alg, header, c, genuine=True):
        si, t = sign(k, alg, header, c)
        if genuine:
            signed.append(si)
        tokens[name] = t

    tok("es256", ec_k, "ES256", dict(kid="ec-1"), claims())
    tok("rs256", rsa_k, "RS256", dict(kid="rsa-1"), claims())
    tok("ps256", rsa_k, "PS256", dict(kid="rsa-1"), claims())
    tok("rs256-nokid", rsa_k, "RS256", {}, claims())
    tok("multi-aud", ec_k, "ES256", dict(kid="ec-1"),
        claims(aud=[CLIENT_ID, "other"], azp=CLIENT_ID, mcdata_id="sip:a@mcdata.test",
               mcvideo_id="sip:a@mcvideo.test"))
    tok("multi-aud-noazp", ec_k, "ES256", dict(kid="ec-1"), claims(aud=[CLIENT_ID, "other"]))
    tok("expired", ec_k, "ES256", dict(kid="ec-1"), claims(exp=NOW - 3600, iat=NOW - 7200))
    tok("future-iat", ec_k, "ES256", dict(kid="ec-1"), claims(iat=NOW + 600))
    tok("wrong-iss", ec_k, "ES256", dict(kid="ec-1"), claims(iss="https://evil.test"))
    tok("wrong-aud", rsa_k, "RS256", dict(kid="rsa-1"), claims(aud="someone-else"))
    tok("wrong-nonce", ec_k, "ES256", dict(kid="ec-1"), claims(nonce="other"))
    tok("no-sub", ec_k, "ES256", dict(kid="ec-1"), claims(sub=None))
    tok("crit", ec_k, "ES256", dict(kid="ec-1", crit=["exp"]), claims())
    tok("other-key", other, "ES256", dict(kid="ec-1"), claims(), genuine=False)
    tok("unknown-kid", ec_k, "ES256", dict(kid="nope"), claims())
    tok("alg-none", ec_k, "none", dict(kid="ec-1"), claims(), genuine=False)
    tok("alg-hs256-confusion", ec_k, "none", dict(kid="rsa-1"), claims(), genuine=False)
    tokens["alg-hs256-confusion"] = tokens["alg-hs256-confusion"].replace(
        tokens["alg-hs256-confusion"].split(".")[0],
        b64u(b'{"alg":"HS256","typ":"JWT","kid":"rsa-1"}')) + "AAAA"
    for name, t in tokens.items():
        with open(os.path.join(OUT, "t-" + name), "w") as f:
            f.write("T" + t)

    jwks_seeds = {
        "trusted": trusted,
        "enc-and-sig": dict(keys=[jwk_rsa(rsa_k, "rsa-1", use="enc"), jwk_ec(ec_k, "ec-1")]),
        "oct": dict(keys=[dict(kty="oct", kid="rsa-1", k=b64u(b"secret-secret-secret"))]),
        "small-rsa": dict(keys=[jwk_rsa(small, "rsa-1")]),
        "p384": dict(keys=[jwk_ec(p384, "ec-1")]),
        "no-kid": dict(keys=[{k: v for k, v in jwk_ec(ec_k, "x").items() if k != "kid"}]),
        "alg-and-ops": dict(keys=[jwk_rsa(rsa_k, "rsa-1", alg="RS256", key_ops=["verify"])]),
        "dup-kid": dict(keys=[jwk_ec(other, "ec-1"), jwk_ec(ec_k, "ec-1")]),
        "empty": dict(keys=[]),
        "not-keys": dict(key=[]),
    }
    for name, doc in jwks_seeds.items():
        with open(os.path.join(OUT, "j-" + name), "w") as f:
            f.write("J" + json.dumps(doc))

    with open(os.path.join(HERE, "fuzz_jwks_idtoken_data.h"), "w") as f:
        f.write("/* Generated by tests/fuzz/gen_jwt_seeds.py: do not edit. */\n")
        f.write("#define FZ_NOW %dLL\n#define FZ_ISSUER %s\n#define FZ_CLIENT_ID %s\n"
                "#define FZ_NONCE %s\n" % (NOW, c_str(ISSUER), c_str(CLIENT_ID), c_str(NONCE)))
        f.write("static const char fz_jwks[] = %s;\n" % c_str(json.dumps(trusted)))
        f.write("/* A valid token for JWKS mode: validated against each fuzzed key set. */\n")
        f.write("static const char fz_token[] = %s;\n" % c_str(tokens["es256"]))
        f.write("static const char fz_token_rsa[] = %s;\n" % c_str(tokens["rs256"]))
        f.write("/* header.payload of every token signed with the trusted keys. */\n")
        f.write("static const char *const fz_signed[] = {\n")
        for si in signed:
            f.write("    %s,\n" % c_str(si))
        f.write("};\n")


if __name__ == "__main__":
    main()

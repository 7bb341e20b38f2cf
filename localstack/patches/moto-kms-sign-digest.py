#!/usr/bin/env python3
"""Makes moto's KMS `Sign` honour `MessageType=DIGEST` (RSA and ECDSA keys).

moto 5.2 ignores MessageType: given a digest it hashes it again, so every signature over
a digest is wrong (real KMS signs the digest as it is). getmoto/moto#10202 fixes this
upstream and is not released yet. This patch does just that and nothing else: it passes
MessageType from the request to the key, which signs with `Prehashed(hash)` when it is
DIGEST. It is idempotent, and it fails (exit 1) if moto's source is not what it expects,
rather than leave a server that signs wrongly.

    python moto-kms-sign-digest.py [SITE_PACKAGES_DIR]   (default: moto's own location)
"""
import os
import sys

MARK = "# signet patch: kms-sign-digest"

EDITS = {
    "responses.py": [
        (
            "        key_id, signature, signing_algorithm = self.kms_backend.sign(\n"
            "            key_id=key_id,\n"
            "            message=message,\n"
            "            signing_algorithm=signing_algorithm,\n"
            "        )\n",
            "        key_id, signature, signing_algorithm = self.kms_backend.sign(\n"
            "            key_id=key_id,\n"
            "            message=message,\n"
            "            signing_algorithm=signing_algorithm,\n"
            "            message_type=message_type,  " + MARK + "\n"
            "        )\n",
        ),
    ],
    "models.py": [
        (
            "    def sign(\n"
            "        self, key_id: str, message: bytes, signing_algorithm: str\n"
            "    ) -> tuple[str, bytes, str]:\n",
            "    def sign(\n"
            "        self, key_id: str, message: bytes, signing_algorithm: str,\n"
            "        message_type: str = \"RAW\",  " + MARK + "\n"
            "    ) -> tuple[str, bytes, str]:\n",
        ),
        (
            "        signature = key.private_key.sign(message, signing_algorithm)\n",
            "        signature = key.private_key.sign(message, signing_algorithm, message_type)  " + MARK + "\n",
        ),
    ],
    "utils.py": [
        (
            "from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa\n",
            "from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa\n"
            "from cryptography.hazmat.primitives.asymmetric.utils import Prehashed  " + MARK + "\n",
        ),
        (
            "    def sign(self, message: bytes, signing_algorithm: str) -> bytes:\n"
            "        validate_signing_algorithm(\n"
            "            signing_algorithm, SigningAlgorithm.rsa_signing_algorithms()\n"
            "        )\n"
            "        pad, hash_algorithm = self.__padding_and_hash_algorithm(signing_algorithm)\n"
            "        return self.private_key.sign(message, pad, hash_algorithm)\n",
            "    def sign(self, message: bytes, signing_algorithm: str, message_type: str = \"RAW\") -> bytes:  " + MARK + "\n"
            "        validate_signing_algorithm(\n"
            "            signing_algorithm, SigningAlgorithm.rsa_signing_algorithms()\n"
            "        )\n"
            "        pad, hash_algorithm = self.__padding_and_hash_algorithm(signing_algorithm)\n"
            "        if message_type == \"DIGEST\":\n"
            "            hash_algorithm = Prehashed(hash_algorithm)\n"
            "        return self.private_key.sign(message, pad, hash_algorithm)\n",
        ),
        (
            "    def sign(self, message: bytes, signing_algorithm: str) -> bytes:\n"
            "        validate_signing_algorithm(signing_algorithm, self.valid_signing_algorithms)\n"
            "        hash_algorithm = self.__hash_algorithm(signing_algorithm)\n"
            "        return self.private_key.sign(message, ec.ECDSA(hash_algorithm))\n",
            "    def sign(self, message: bytes, signing_algorithm: str, message_type: str = \"RAW\") -> bytes:  " + MARK + "\n"
            "        validate_signing_algorithm(signing_algorithm, self.valid_signing_algorithms)\n"
            "        hash_algorithm = self.__hash_algorithm(signing_algorithm)\n"
            "        if message_type == \"DIGEST\":\n"
            "            hash_algorithm = Prehashed(hash_algorithm)\n"
            "        return self.private_key.sign(message, ec.ECDSA(hash_algorithm))\n",
        ),
    ],
}


def main(argv):
    if len(argv) > 1:
        kms_dir = os.path.join(argv[1], "moto", "kms")
    else:
        import moto.kms

        kms_dir = os.path.dirname(moto.kms.__file__)
    # First check every file, then write: never a half-patched moto.
    texts = {}
    for name in EDITS:
        with open(os.path.join(kms_dir, name)) as f:
            texts[name] = f.read()
    marked = [name for name, text in texts.items() if MARK in text]
    if len(marked) == len(EDITS):
        return 0
    if marked:
        print("moto-kms-sign-digest: %s is patched but %s is not; reinstall moto"
              % (", ".join(marked), ", ".join(n for n in EDITS if n not in marked)), file=sys.stderr)
        return 1
    patched = {}
    for name, edits in EDITS.items():
        text = texts[name]
        for old, new in edits:
            if text.count(old) != 1:
                print("moto-kms-sign-digest: %s does not contain the expected code once; "
                      "this moto is not the one the patch is for" % os.path.join(kms_dir, name), file=sys.stderr)
                return 1
            text = text.replace(old, new)
        patched[name] = text
    for name, text in patched.items():
        with open(os.path.join(kms_dir, name + ".signet-tmp"), "w") as f:
            f.write(text)
    for name in patched:
        path = os.path.join(kms_dir, name)
        os.replace(path + ".signet-tmp", path)
        print("moto-kms-sign-digest: patched %s" % path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

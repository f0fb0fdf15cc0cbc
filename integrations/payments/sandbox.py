"""Keys for a channel in the sandbox: our key pair and the simulated channel's, made once per
data folder. Our private key and the channel's public key are files, as a hospital deploys
them; the simulator reads the other halves from the JSON beside them."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from integrations.payments.wechat import new_rsa_pair


@dataclass(frozen=True, kw_only=True)
class SandboxKeys:
    our_private_key_path: str  # the merchant's / app's private key
    their_public_key_path: str  # the channel's public key
    our_public_key: str  # what the simulator verifies our requests with
    their_private_key: str  # what the simulator signs with
    secret: str  # a shared symmetric key (WeChat's APIv3 key)


def sandbox_keys(folder: Path, channel: str) -> SandboxKeys:
    folder.mkdir(parents=True, exist_ok=True)
    ours, theirs, spec = (folder / f"{channel}-our-key.pem", folder / f"{channel}-their-public.pem",
                          folder / f"{channel}-sandbox.json")
    if not spec.exists():
        our_private, our_public = new_rsa_pair()
        their_private, their_public = new_rsa_pair()
        ours.write_text(our_private)
        theirs.write_text(their_public)
        spec.write_text(json.dumps({"our_public_key": our_public, "their_private_key": their_private,
                                    "secret": secrets.token_hex(16)}))
        spec.chmod(0o600)
    return SandboxKeys(our_private_key_path=str(ours), their_public_key_path=str(theirs),
                       **json.loads(spec.read_text()))

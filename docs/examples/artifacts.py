"""artifacts: put bytes on a host, list them through artifacts.v1, copy them host to host."""

import asyncio
import hashlib
import tempfile

from paglets import AsyncHostClient, Host
from paglets.artifacts.contract import ARTIFACTS, ArtifactName, CopyArtifact, ListArtifacts


async def main() -> None:
    data = b"results of run 7\n" * 1000
    sha256 = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory() as state_dir:
        async with (
            Host(name="alpha", state_dir=state_dir, artifact_quota=1 << 20) as alpha,
            Host(name="beta", state_dir=state_dir, peers=[alpha.url]) as beta,
            AsyncHostClient(alpha.url) as client,
        ):
            # the bytes stream in; the host keeps them only if their sha256 is this one
            params = {"size": str(len(data)), "sha256": sha256}
            await client.send_body("PUT", "/v1/artifacts/run-7.txt", data, params=params)
            artifacts = client.service(ARTIFACTS)
            listed = await artifacts.list(ListArtifacts())
            print(f"{listed.host}: {listed.used} of {listed.quota} bytes used")
            for artifact in listed.artifacts:
                print(" ", artifact.name, artifact.size, artifact.sha256 == sha256)
            copy = await artifacts.copy(CopyArtifact("run-7.txt", to="beta"))  # alpha sends it
            print("copied to", copy.host, copy.sha256 == sha256)
            async with (
                AsyncHostClient(beta.url) as other,
                other.stream_body("/v1/artifacts/run-7.txt") as response,
            ):
                print("beta has the same bytes:", await response.read() == data)
            removed = await artifacts.remove(ArtifactName("run-7.txt"))
            print("removed from", removed.host)


if __name__ == "__main__":
    asyncio.run(main())

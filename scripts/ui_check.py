"""`make ui-check`: look at the Dagster UI the way a person does, after `make demo` (not in CI).

Starts `genbound ui` on a free loopback port, waits for the code location, checks over GraphQL
that every asset is materialized (each partitioned asset on every partition it should have),
then opens the UI in headless Chromium through Selenium (Debian's chromium + chromium-driver;
`scripts/ui_check.sh` installs them), gets past the first-visit dialog, and saves screenshots of
the asset graph and of the model_bounds asset's page (its plot) under <data dir>/ui-check/.
Exits non-zero if the location does not load, an asset is unmaterialized, or a page shows an
error.  Stops everything it started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genbound_assets import storage  # noqa: E402

ERROR_MARKERS = ("Something went wrong", "PythonError", "Unexpected GraphQL error",
                 "Failed to load", "Error loading")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql",
                                 data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.load(resp)
    if body.get("errors"):
        raise RuntimeError(body["errors"][0].get("message"))
    return body["data"]


def wait_loaded(port: int, proc, timeout: float = 240) -> None:
    q = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("ui-check: genbound ui exited before the UI came up")
        try:
            entries = gql(port, q)["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return
        except (OSError, RuntimeError, KeyError, TypeError):
            pass
        time.sleep(1)
    raise SystemExit(f"ui-check: the code location did not load within {timeout:.0f} s")


def unmaterialized(port: int) -> list[str]:
    nodes = gql(port, """{ assetNodes { assetKey { path } isPartitioned isMaterializable
        partitionStats { numMaterialized numPartitions numFailed } } }""")["assetNodes"]
    bad = []
    for n in nodes:
        key = "/".join(n["assetKey"]["path"])
        if not n["isMaterializable"]:
            continue    # table stand-ins of unclaimed tables
        if n["isPartitioned"]:
            st = n["partitionStats"] or {}
            if not st.get("numMaterialized"):
                bad.append(f"{key} (no partition materialized)")
        else:
            m = gql(port, """query($k: AssetKeyInput!) { assetOrError(assetKey: $k) {
                ... on Asset { assetMaterializations(limit: 1) { runId } } } }""",
                    {"k": {"path": n["assetKey"]["path"]}})
            if not (m["assetOrError"] or {}).get("assetMaterializations"):
                bad.append(key)
    return bad


def browser_shots(port: int, out: Path, family: str) -> list[str]:
    import shutil

    # the local chromedriver, named: Selenium Manager would otherwise look it up online and send
    # usage statistics (nothing here may reach outside this machine)
    os.environ["SE_AVOID_STATS"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        raise SystemExit("ui-check: chromedriver not found (scripts/ui_check.sh installs chromium-driver)")

    opts = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1600,1000"):
        opts.add_argument(flag)
    opts.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    problems = []
    try:
        base = f"http://127.0.0.1:{port}"
        pages = [("asset-graph.png", f"{base}/locations/genbound/asset-groups/{family}/lineage", 1000),
                 ("model-bounds.png", f"{base}/assets/{family}/model_bounds", 1600),
                 ("checkpoint-bounds.png", f"{base}/assets/{family}/checkpoint_bounds", 1400)]
        for name, url, height in pages:
            driver.set_window_size(1600, height)   # tall enough for the asset's plots
            driver.get(url)
            time.sleep(6)
            for label in ("Skip", "Dismiss", "Close", "No thanks"):
                for b in driver.find_elements(By.XPATH, f"//button[normalize-space()='{label}']"):
                    try:
                        b.click()
                        time.sleep(1)
                    except Exception:  # noqa: BLE001 - a stale dialog button is fine
                        pass
            time.sleep(3)
            text = driver.find_element(By.TAG_NAME, "body").text
            for marker in ERROR_MARKERS:
                if marker in text:
                    problems.append(f"{url}: page shows {marker!r}")
            driver.save_screenshot(str(out / name))
            print(f"ui-check: {out / name}")
    finally:
        driver.quit()
    return problems


def main() -> int:
    out = storage.data_dir() / "ui-check"
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # stop afterwards only the embedded server this check started (a user's running one stays)
    pg_was_running = (os.environ.get(storage.DATABASE_URL_ENV) is not None
                      or storage.embedded_pid() is not None)
    log = open(out / "ui.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([str(Path(sys.executable).parent / "genbound"), "ui", "--port", str(port)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_loaded(port, proc)
        print(f"ui-check: UI up at http://127.0.0.1:{port}")
        bad = unmaterialized(port)
        from genbound_assets.families.registry import load_families

        family = load_families()[0].name
        problems = browser_shots(port, out, family)
        for b in bad:
            print(f"ui-check: unmaterialized asset: {b}")
        for p in problems:
            print(f"ui-check: {p}")
        return 1 if bad or problems else 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        if not pg_was_running and storage.stop_embedded():
            print(f"ui-check: stopped the embedded server it started in {storage.embedded_pg_dir()}")


if __name__ == "__main__":
    sys.exit(main())

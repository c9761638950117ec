#!/usr/bin/env python3
"""Drives the server's web page in a real browser: Debian's chromium through chromedriver's
WebDriver protocol (plain HTTP, standard library only). Picks a demo test image in the page's
file input, reads the class the page shows, and checks it against the API's answer for the
same image; saves a screenshot of the page.

    python3 tests/browser/serve_page.py --base http://127.0.0.1:18080 \
        --idx assets/fashion-mnist-demo/t10k-images-idx3-ubyte.gz --index 0 --screenshot page.png
"""
import argparse
import base64
import gzip
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def idx_png(path, index):
    """Image `index` of a gzip'ed IDX file as an 8-bit grey PNG."""
    with gzip.open(path) as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051 or index >= n:
            sys.exit(f"{path}: not an IDX image file with an image {index}")
        f.seek(16 + index * rows * cols)
        pixels = f.read(rows * cols)
    raw = b"".join(b"\x00" + pixels[r * cols:(r + 1) * cols] for r in range(rows))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", cols, rows, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def call(method, url, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"{}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--idx", required=True)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--screenshot")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="chromedriver")
    a = ap.parse_args()

    work = tempfile.mkdtemp()
    image = os.path.join(work, f"demo-test-{a.index}.png")
    png = idx_png(a.idx, a.index)
    with open(image, "wb") as f:
        f.write(png)

    # What the API answers for this image at the default budget: the page must show the same.
    req = urllib.request.Request(a.base + "/v1/classify", data=png, method="POST",
                                 headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(req, timeout=60) as r:
        want = json.loads(r.read())["predictions"][0]["class"]

    port = free_port()
    driver = subprocess.Popen([a.chromedriver, f"--port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wd = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if call("GET", wd + "/status", timeout=2)["value"]["ready"]:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            sys.exit("chromedriver did not start")
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": a.chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1000,760", f"--user-data-dir={work}/profile"]}}}}
        session = call("POST", wd + "/session", caps)["value"]["sessionId"]
        s = f"{wd}/session/{session}"
        try:
            call("POST", s + "/url", {"url": a.base + "/"})
            find = lambda css: call("POST", s + "/elements", {"using": "css selector", "value": css})["value"]
            file_input = find("#file")[0][ELEMENT]
            call("POST", f"{s}/element/{file_input}/value", {"text": image})
            shown, deadline = None, time.time() + 60
            while time.time() < deadline:
                errors = find("#results td.error")
                if errors:
                    text = call("GET", f"{s}/element/{errors[0][ELEMENT]}/text")["value"]
                    sys.exit(f"the page shows an error: {text}")
                cells = find("#results td.class")
                if cells:
                    shown = call("GET", f"{s}/element/{cells[0][ELEMENT]}/text")["value"]
                    break
                time.sleep(0.2)
            if shown is None:
                sys.exit("the page showed no class within 60 s")
            # Let the live charts draw a frame or two before the screenshot.
            time.sleep(2.5)
            if a.screenshot:
                shot = call("GET", s + "/screenshot")["value"]
                with open(a.screenshot, "wb") as f:
                    f.write(base64.b64decode(shot))
        finally:
            call("DELETE", s)
    finally:
        driver.terminate()
        driver.wait(timeout=10)
    if shown != want:
        sys.exit(f"the page shows '{shown}', the API answers '{want}'")
    print(f"browser: the page shows '{shown}' for demo test image {a.index}, as the API answers")


if __name__ == "__main__":
    main()

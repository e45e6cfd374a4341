"""The pages people open (the demo's index, the audit and evaluation reports) render in headless Chromium: every image
loads, no section is empty, the screenshot is not blank."""

import shutil
import subprocess

import matplotlib.image
import pytest

PAGES = ("index.html", "audit/report.html", "audit/report_redacted.html", "evaluation/report.html")
PROBE = """<script>window.addEventListener('load', () => {
const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length;
const empty = [...document.querySelectorAll('section')]
  .filter(s => s.innerText.trim().length === 0 && s.querySelectorAll('img,table').length === 0).length;
document.body.setAttribute('data-probe',
  `images=${document.images.length} broken=${broken} sections=${document.querySelectorAll('section').length} empty=${empty}`);
});</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("needs headless Chromium (Debian: apt-get install chromium), which is absent")


def browse(*args: str) -> str:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120).stdout


def probe(page) -> dict[str, int]:
    """Load a copy of `page` with a script that counts images, broken images, sections and empty sections."""
    copy = page.parent / f".probe-{page.name}"
    copy.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    try:
        dom = browse("--dump-dom", copy.as_uri())
    finally:
        copy.unlink()
    found = dom.split('data-probe="', 1)[1].split('"', 1)[0]
    return {k: int(v) for k, v in (part.split("=") for part in found.split())}


def test_the_probe_catches_a_broken_image_and_an_empty_section(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><section><h2>ok</h2></section><section></section>"
                    "<img src='data:image/png;base64,AAAA'></body></html>")
    assert probe(page) == {"images": 1, "broken": 1, "sections": 2, "empty": 1}


@pytest.mark.parametrize("name", PAGES)
def test_page_renders_with_every_image_and_section(quick_demo, name, tmp_path):
    demo, result = quick_demo
    assert result.returncode == 0, result.stderr
    page = demo / name
    found = probe(page)
    assert found["images"] >= 1 and found["broken"] == 0, found
    assert found["sections"] >= 3 and found["empty"] == 0, found
    shot = tmp_path / "page.png"
    browse(f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri())
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1600, 1280) and pixels[..., :3].std() > 0.05   # something is drawn

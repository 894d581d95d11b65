"""The picture of the served page in docs/serve.md, taken the way its test drives the page.

    python scripts/screenshot_page.py --workdir runs/obama --output docs/serve.png

Serves the run on a free loopback port, opens the page in headless Chromium (charlstm/serve/browser.py;
needs `pip install -e '.[test]'` and Debian's chromium and chromium-driver), generates three samples
and saves the window as a PNG.
"""

from absl import flags

from charlstm import cli
from charlstm.serve import Limits, browser, running

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder made by scripts/train.py.")
_OUTPUT = flags.DEFINE_string("output", "docs/serve.png", "The PNG to write.")
_PROMPT = flags.DEFINE_string("prompt", "the state of our union is", "The prompt typed into the page.")
flags.mark_flags_as_required(["workdir"])


def main() -> None:
    settings = {"temperature": 0.5, "length": 400, "seed": 7, "num_samples": 3}
    with running(_WORKDIR.value, Limits()) as url, browser.chromium() as driver:
        browser.generate_on_page(driver, url, _PROMPT.value, settings)
        driver.save_screenshot(_OUTPUT.value)
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    cli.run(main, "pass the run folder as --workdir")

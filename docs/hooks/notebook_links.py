"""mkdocs hook: the tutorials' links to other files work on the site as in the repository.

A notebook links to files by their path in the repository, relative to
``tutorials/`` (``02_how_fedluar_works.ipynb``, ``../docs/benchmarks.md``), so
that the links work on GitHub and in Jupyter. mkdocs-jupyter renders each
notebook to HTML without resolving those links, and on the site the page lives
at ``tutorials/<name>/``, where they would point nowhere. This hook rewrites
every relative link of a notebook page to the URL of the site page built from
the file it names, and fails the build (naming the notebook and the link) when
that file is not part of the site.
"""

from __future__ import annotations

import posixpath
import re

from mkdocs.exceptions import PluginError
from mkdocs.utils import get_relative_url

_HREF = re.compile(r'href="(?P<path>[^":#?]+\.(?:md|ipynb))(?P<anchor>#[^"]*)?"')


def on_page_content(html, page, config, files):
    source = page.file.src_uri
    if not source.endswith(".ipynb"):
        return html
    # The notebook's folder in the repository (docs/tutorials is a link to tutorials/).
    folder = posixpath.dirname(source)

    def rewrite(match):
        target = posixpath.normpath(posixpath.join(folder, match["path"]))
        if target.startswith("docs/"):  # tutorials/../docs/x.md in the repository
            target = target[len("docs/") :]
        linked = files.get_file_from_path(target)
        if linked is None:
            raise PluginError(
                f"{source}: the link {match['path']!r} names no page of the site "
                f"(looked for docs/{target})"
            )
        url = get_relative_url(linked.url, page.url)
        return f'href="{url}{match["anchor"] or ""}"'

    return _HREF.sub(rewrite, html)

"""The package layout, which pyproject.toml cannot say: repository folders shipped inside ares_data.

`db/migrations/*.sql` installs as the package data `ares_data.migrations` and `prompts/*.md` as
`ares_data.prompts`, so nothing named `db` or `prompts` is installed at the top level (where any
other package of that name would shadow it, or be shadowed). Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

DATA_PACKAGES = {"ares_data.migrations": "db/migrations", "ares_data.prompts": "prompts"}
PACKAGE_DATA = {"ares_data.examples": ["*.jsonl"], "ares_data.migrations": ["*.sql"], "ares_data.prompts": ["*.md"]}

setup(
    packages=sorted({*find_packages(include=["ares_data*", "ares_train*"]), *PACKAGE_DATA}),
    package_dir=DATA_PACKAGES,
    package_data=PACKAGE_DATA,
)

"""Packaging for the SIP presence server."""

from setuptools import find_packages, setup

setup(
    name="presence",
    version="0.1.0",
    description="A SIP presence server (RFC 6665, RFC 3903, RFC 3856) on Twisted",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[*find_packages(include=["presence", "presence.*"]), "twisted.plugins"],
    package_data={"presence.storage": ["schema/*.sql"]},
    install_requires=[
        "Twisted[tls]>=23.10",
        "lxml>=5.0",
        "txpostgres>=1.7",
        "psycopg2-binary>=2.9",
        "treq>=23.11",
        "prometheus_client>=0.17",
        "zope.interface>=6.0",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
        ],
        "dev": [
            "ruff>=0.6",
            "mypy>=1.11",
            "mypy-zope>=1.0.5",
            "lxml-stubs",
            "types-psycopg2",
            "pydoctor>=24.3",
            "import-linter>=2.0",
        ],
    },
    entry_points={"console_scripts": ["presence-ctl = presence.ctl:main"]},
)

"""Bash completion for `mediasortd`, generated from its argparse parser, so it never
drifts from the commands: `python -m daemon.app.completion` prints the script
(packaging/install.sh writes it to /usr/share/bash-completion/completions/mediasortd).

It completes the subcommands, each subcommand's options, file names after `--config`
and for the arguments that are paths or files (import, adopt, find), and nothing after
an option that takes some other value. Plain bash: no bash-completion helpers needed."""

from __future__ import annotations

import argparse
import sys

from .args import build_parser

# options whose value is a file name; any other option with a value completes nothing
_PATH_METAVARS = {"PATH", "SRC", "FILE", "DIR"}


def _options(parser: argparse.ArgumentParser) -> tuple[list[str], list[str], list[str]]:
    """(every option, the options that take a value, those whose value is a path)"""
    every: list[str] = []
    valued: list[str] = []
    paths: list[str] = []
    for action in parser._actions:
        hidden = action.help == argparse.SUPPRESS and action.dest != "config"
        if not action.option_strings or hidden:
            continue
        every += action.option_strings
        if action.nargs != 0:
            valued += action.option_strings
            if action.dest == "config" or str(action.metavar) in _PATH_METAVARS:
                paths += action.option_strings
    return every, valued, paths


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _takes_files(parser: argparse.ArgumentParser) -> bool:
    """Whether a subcommand's positional arguments can be file names."""
    return any(
        not a.option_strings and (str(a.metavar) in _PATH_METAVARS or a.dest == "what")
        for a in parser._actions
    )


def bash_script(parser: argparse.ArgumentParser | None = None) -> str:
    parser = parser or build_parser()
    subs = _subcommands(parser)
    top, top_valued, top_paths = _options(parser)
    valued, paths = set(top_valued), set(top_paths)
    cases = []
    for name, sub in subs.items():
        opts, v, p = _options(sub)
        valued.update(v)
        paths.update(p)
        files = "1" if _takes_files(sub) else ""
        cases.append(f'        {name}) opts="{" ".join(opts)}"; files={files} ;;')
    return f"""\
# bash completion for mediasortd: generated from its argparse parser by
# `python -m daemon.completion` (packaging/install.sh installs it).
_mediasortd() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local cmd= opts= files= i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${{COMP_WORDS[i]}} in
            {"|".join(sorted(valued))}) ((i++)) ;;
            -*) ;;
            *) cmd=${{COMP_WORDS[i]}}; break ;;
        esac
    done
    case $prev in
        {"|".join(sorted(paths))})
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -f -- "$cur")); return 0 ;;
        {"|".join(sorted(valued - paths))})
            COMPREPLY=(); return 0 ;;
    esac
    case $cmd in
        '') opts="{" ".join(top)}" ;;
{chr(10).join(cases)}
        *) COMPREPLY=(); return 0 ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "{" ".join(subs)}" -- "$cur"))
    elif [[ -n $files ]]; then
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
    else
        COMPREPLY=()
    fi
    return 0
}}
complete -F _mediasortd mediasortd
"""


def main() -> int:
    sys.stdout.write(bash_script())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The decide step, COPIED -> DECIDED, for a batch: what each copy is (one ExifTool
request), then one transaction per job, committed together in capture order: a
duplicate, a reject, or a catalog row with its library name reserved. COPIED is
committed with the decision: a crash before it leaves the job at RECORDED, copied again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..model import Job, MediaInfo, NotMedia, Outcome, Step, display
from ..rules.companions import companion_of, library_name
from ..store import catalog, journal, names
from . import pairing
from .naming import reserve_name
from .worker import Retry, Worker, filled

if TYPE_CHECKING:
    import apsw


def _when(info: MediaInfo | NotMedia | None) -> datetime:
    return info.captured if isinstance(info, MediaInfo) else datetime.max


class Deciding(Worker):
    """The decide step of one worker."""

    def decide_all(self, jobs: list[Job]) -> list[Job | Retry]:
        """COPIED -> DECIDED for `jobs`: one ExifTool request for the files that need
        one, one commit for all (reserved in capture order: a burst sharing a second is
        numbered by sub-second)."""
        out: list[Job | Retry | None] = [None] * len(jobs)
        ready = [
            i
            for i, job in enumerate(jobs)
            if job.size and job.staged and companion_of(os.path.basename(job.source)) is None
        ]
        described: dict[int, MediaInfo | NotMedia] = {}
        try:
            described = dict(
                zip(
                    ready,
                    self.reader.describe_many(
                        [
                            (
                                jobs[i].staged or b"",
                                os.fsdecode(os.path.basename(jobs[i].source)),
                                jobs[i].identity.mtime_ns,
                            )
                            for i in ready
                        ],
                        [self.heads.pop(jobs[i].id, None) for i in ready],
                    ),
                )
            )
        except Exception as e:  # noqa: BLE001 - each job asks again, alone, and meets it there
            self.log.debug("ingest.describe_many_failed", error=str(e))
        plans: dict[int, Callable[[apsw.Connection], Job]] = {}
        for i, job in enumerate(jobs):
            try:
                plan = self._decision(job, described.get(i))
            except Exception as e:  # noqa: BLE001 - a worker survives one bad file
                plan = self._trouble(job, e)
            if isinstance(plan, (Job, Retry)):
                out[i] = plan
            else:
                plans[i] = plan
        order = sorted(plans, key=lambda i: _when(described.get(i)))
        for i, got in zip(order, self._commit_many([plans[i] for i in order]), strict=True):
            out[i] = self._trouble(jobs[i], got) if isinstance(got, Exception) else got
        return filled(out)

    @staticmethod
    def _copied(job: Job) -> dict[str, Any]:
        """The columns COPIED sets, written with the next commit."""
        return {
            "sha256": job.sha256,
            "bytes": job.size,
            "dev": job.identity.dev,
            "ino": job.identity.ino,
            "size": job.identity.size,
            "mtime_ns": job.identity.mtime_ns,
            "error": None,
        }

    def _decision(
        self, job: Job, described: MediaInfo | NotMedia | None = None
    ) -> Job | Retry | Callable[[apsw.Connection], Job]:
        """The transaction that decides a COPIED job, or what became of the job when
        there is nothing to decide yet. `described`: what the staged file is, when it
        was already read with the batch."""
        assert job.staged is not None and job.sha256 is not None and job.size is not None
        head = self.heads.pop(job.id, None)
        try:
            mtime_ns = os.stat(job.staged).st_mtime_ns  # the library file's (it is linked)
        except FileNotFoundError:  # lost (power cut before the staging fsync)
            return self._advance(job, Step.RECORDED)
        name = os.path.basename(job.source)
        companion = companion_of(name)
        partner: catalog.Entry | None = None
        if companion is not None:
            found = pairing.partner(self.conn, job, companion, self.companion_grace, self.expected)
            if found is pairing.WAIT:  # keep the copy while waiting: commit COPIED
                self._advance(job, Step.COPIED, **self._copied(job))
                return Retry(job, 1.0, "waiting for the photo it belongs with")
            partner = found if isinstance(found, catalog.Entry) else None
        info: MediaInfo | NotMedia
        if job.size == 0:
            info = NotMedia("an empty file")
        elif companion is not None and companion.kind == "sidecar" and partner is not None:
            info = pairing.as_companion(partner, companion, "sidecar")
        else:
            info = (
                described
                or self.reader.describe_many(
                    [(job.staged, os.fsdecode(name), job.identity.mtime_ns)], [head]
                )[0]
            )
            if (
                isinstance(info, MediaInfo)
                and partner is not None
                and not pairing.motion_pairs(info, partner)
            ):
                partner = None  # a video of its own that only shares the name
            if isinstance(info, MediaInfo) and partner is not None:
                info = dataclasses.replace(
                    pairing.as_companion(partner, companion, info.kind),
                    file_type=info.file_type,
                    mime=info.mime,
                    content_id=info.content_id,
                )
            elif isinstance(info, MediaInfo) and info.confidence != "high":
                info = pairing.takeout_date(job.source, info, self.tz, self._root(job.source))
            if (
                isinstance(info, MediaInfo)
                and partner is None
                and info.date_source == "mtime"
                and self.cfg.undated == "reject"
            ):
                info = NotMedia(
                    'no capture date in its content, name or sidecar (ingest.undated = "reject")'
                )
        copied = self._copied(job)
        sha256, size = job.sha256, job.size
        # a sidecar filed with its photo: (the photo's row id, what dates a sidecar of it)
        sidecar_of = (
            (partner.id, f"partner:{catalog.printable(partner.path)}")
            if companion is not None
            and companion.kind == "sidecar"
            and partner is not None
            and isinstance(info, MediaInfo)
            else None
        )

        def decide(conn: apsw.Connection) -> Job:
            key = sha256
            existing = catalog.by_sha256(conn, sha256)
            if (
                existing is not None
                and sidecar_of is not None
                and existing.date_source != sidecar_of[1]
            ):
                # the same bytes as another photo's sidecar: this photo keeps its own
                key = catalog.companion_key(sha256, sidecar_of[0])
                existing = catalog.by_sha256(conn, key)
            existing = catalog.present(conn, existing)  # lost from the library: filed anew
            if existing is not None:
                quarantine = job.move and self.cfg.on_duplicate == "quarantine"
                return journal.advance(
                    conn,
                    job.id,
                    Step.DECIDED,
                    **copied,
                    outcome=Outcome.DUPLICATE,
                    duplicate_of=existing.id,
                    dest=self._side_path(self.cfg.duplicates, job) if quarantine else None,
                )
            if isinstance(info, NotMedia) or (
                companion is not None and partner is None and companion.kind == "sidecar"
            ):
                reason = info.reason if isinstance(info, NotMedia) else ""
                if companion is not None and companion.kind == "sidecar" and job.size:
                    reason = "a sidecar whose photo is not in the library"
                return journal.advance(
                    conn,
                    job.id,
                    Step.DECIDED,
                    **{**copied, "error": reason},
                    outcome=Outcome.REJECTED,
                    dest=self._side_path(self.cfg.rejected, job) if job.move else None,
                )
            rel = (
                names.free_name(conn, self.library, library_name(partner.path, companion))
                if partner is not None and companion is not None
                else reserve_name(conn, self.cfg, self.roots, job, info)
            )
            catalog.insert(
                conn,
                sha256=key,
                size=size,
                path=rel,
                info=info,
                original_name=display(name),
                source=job.source,
                imported_at=journal.now(),
                job_id=job.id,
                mtime_ns=mtime_ns,
            )
            return journal.advance(
                conn,
                job.id,
                Step.DECIDED,
                **copied,
                outcome=Outcome.FILED,
                dest=os.path.join(self.library, os.fsencode(rel)),
            )

        return decide

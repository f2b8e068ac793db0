"""Atomic claims of skip sets in a study several workers share (`--storage`): before a worker evaluates a set, its
trial claims the set in a table of the study's own database, where a set can be claimed once, so two workers that
propose at the same moment never both evaluate it. A claim whose trial failed (its worker died) can be taken over,
in one conditional update, by exactly one other trial."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from rad.search.space import Skip

TABLE = "rad_set_claims"


class SetClaims:
    def __init__(self, engine, study_name: str):
        self.engine, self.study = engine, study_name
        with engine.begin() as connection:
            connection.execute(text(f"CREATE TABLE IF NOT EXISTS {TABLE} (study VARCHAR(512) NOT NULL, "
                                    "skip VARCHAR(512) NOT NULL, trial INTEGER NOT NULL, PRIMARY KEY (study, skip))"))

    def claim(self, skip: Skip, trial: int, failed: Callable[[int], bool]) -> bool:
        """Whether trial number `trial` now holds `skip` (`failed(n)`: trial n failed, so its claim is free)."""
        key = {"study": self.study, "skip": ",".join(map(str, skip)), "trial": trial}
        try:
            with self.engine.begin() as connection:
                connection.execute(text(f"INSERT INTO {TABLE} (study, skip, trial) VALUES (:study, :skip, :trial)"), key)
            return True
        except IntegrityError:
            pass
        with self.engine.begin() as connection:
            holder = connection.execute(text(f"SELECT trial FROM {TABLE} WHERE study = :study AND skip = :skip"),
                                        key).scalar()
            if holder == trial:
                return True
            if holder is None or not failed(holder):
                return False
            taken = connection.execute(text(f"UPDATE {TABLE} SET trial = :trial WHERE study = :study AND skip = :skip "
                                            "AND trial = :holder"), {**key, "holder": holder})
            return taken.rowcount == 1

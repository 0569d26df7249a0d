"""The SQL store (SQLAlchemy Core) for SQLite and PostgreSQL.

Atomicity comes from the database, not from Python: a consume reads its day row (and
its Idempotency-Key's stored answer) under a lock, ``decide`` grants or refuses it, and
what changed is written back in the same transaction; concurrent consumes share that
transaction and its commit (see ``consume.py``). Every other multi-statement step runs
in one transaction too.

- ``engine.py``: URLs, engines, connection settings, transactions, migrations;
- ``records.py``: services, plans, accounts, keys, settings, total history, sessions;
- ``counters.py``: usage, events, gauges and a counter store's write-behind;
- ``alerts.py``: webhook endpoints, alert events and their deliveries;
- ``dump.py``: the whole store out (one snapshot) and into an empty one (one transaction);
- ``consume.py``, ``decide.py``, ``statements.py``, ``day_batches.py``: the consumes.
- ``reservations.py``, ``reservation_batches.py``: reservations, their writes group-committed
  (on SQLite in the consumes' writer's transactions).
"""

from __future__ import annotations

from quotad.storage.sql.alerts import SqlAlerts
from quotad.storage.sql.counters import SqlCounters
from quotad.storage.sql.credits import SqlCredits
from quotad.storage.sql.dump import SqlDump
from quotad.storage.sql.engine import Database, migrate
from quotad.storage.sql.records import SqlRecords
from quotad.storage.sql.reservations import SqlReservations
from quotad.storage.sql.rows import from_micros, to_micros


class SqlStore(SqlRecords, SqlCounters, SqlAlerts, SqlCredits, SqlReservations, SqlDump):
    """Records and counters in one SQL database, over one set of engines.

    Args:
        url: ``sqlite:///path`` or ``postgresql://…``.
        pool_size: PostgreSQL connections kept open (as many again may be opened in bursts).
        batch: group-commit concurrent consumes; ``False`` runs one transaction per consume.
    """

    def __init__(self, url: str, pool_size: int = 10, *, batch: bool = True) -> None:
        self.url = url
        db = Database(url, pool_size)
        SqlRecords.__init__(self, db)
        SqlCounters.__init__(self, db, batch=batch)
        SqlAlerts.__init__(self, db)

    async def open(self) -> None:
        """Create the engines and migrate the schema to the latest revision."""
        await self._db.open()
        self._consumes.start()

    async def close(self) -> None:
        """Finish what is under way and dispose of the engines."""
        await self._db.under_way.settled()
        await self._consumes.stop()
        await self._db.close()

    async def ping(self) -> None:
        """Run a trivial query."""
        await self._db.ping()


__all__ = ["SqlStore", "from_micros", "migrate", "to_micros"]

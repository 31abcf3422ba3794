"""Identity resolution: accounts sharing an identifier are one person (connected components).

Vertices are accounts; a canonical email, a phone, a device id or a payment fingerprint shared by
several accounts links them. Blank and placeholder values link nothing. A value shared by more
than `max_shared` accounts (a call-centre phone, a shop's card reader) is not expanded at all:
its accounts get `SHARED_IDENTIFIER` instead, so one hot key can never blow up a join. Only the
memberships of values held by two or more accounts enter the graph (a few percent of them on real
data); the accounts they name are `linked_accounts`, and every other account is a cluster of one.

Components come from the alternating large-star / small-star algorithm (Kiveris et al., "Connected
Components in MapReduce and Beyond", 2014; GraphFrames' default): each identifier first links its
holders to the smallest of them, then large-star (every node's larger neighbours move to the
smallest node of its neighbourhood) and small-star (every node and its smaller neighbours move to
the smallest of them) alternate until a round changes no edge. The rounds grow with the logarithm
of a component's size, whatever its shape: a chain of 10,000 accounts, each sharing a device with
the next, converges in a few dozen steps where label propagation needs thousands. Lineage is cut
after every round; `identity_cluster_id` is the smallest account id of the component.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from campaign_pipeline.stage_context import local_cut

PLACEHOLDERS = (
    "",
    "0",
    "-",
    "--",
    "n/a",
    "na",
    "none",
    "null",
    "nil",
    "unknown",
    "undefined",
    "test",
    "x",
    "xx",
    "xxx",
    "000-000-0000",
    "0000000000",
    "00000000-0000-0000-0000-000000000000",
)
IDENTIFIERS = ("email_canonical", "phone_e164", "device_id", "payment_fingerprint")


def identifier_memberships(df: DataFrame, account: str = "global_user_id", carry: Sequence[str] = ()) -> DataFrame:
    """(key, account, *carry) for every usable identifier value of every account, partitioned by key.

    An account listed twice holds its keys twice here; `linked_memberships` counts each holder once.
    """
    pairs = F.array(*[F.struct(F.lit(c).alias("kind"), F.col(c).cast("string").alias("value")) for c in IDENTIFIERS])
    exploded = df.select(F.col(account).alias("account"), *carry, F.explode(pairs).alias("id"))
    value = F.lower(F.trim(F.col("id.value")))
    return (
        exploded.where(F.col("id.value").isNotNull() & ~value.isin(*PLACEHOLDERS))
        .select(F.concat(F.col("id.kind"), F.lit(":"), F.col("id.value")).alias("key"), "account", *carry)
        .repartition("key")
    )


def linked_memberships(memberships: DataFrame, cut=None) -> DataFrame:
    """The memberships of keys held by two or more accounts, with `holders` (distinct accounts).

    One sort of the key-partitioned memberships does it: an account counts where it differs from
    the row before it. Most identifier values have one holder and link nothing, so what is kept is
    small; `cut(df, name)` (when given) materialises it once for the edges, the over-shared
    accounts and the accounts' own columns. The sort leads with a 64-bit hash of the key: keys of
    one kind share their first bytes ("email_canonical:"), which would defeat the sorter's prefix
    comparison.
    """
    by_key = Window.partitionBy("_h", "key")
    new_holder = F.lag("account").over(by_key.orderBy("account")) != F.col("account")
    linked = (
        memberships.withColumn("_h", F.xxhash64("key"))
        .withColumn("_new", F.coalesce(new_holder, F.lit(True)).cast("long"))
        .withColumn("holders", F.sum("_new").over(by_key))
        .where(F.col("holders") > 1)
        .drop("_h", "_new")
    )
    return linked if cut is None else cut(linked, "identity graph linked identifiers")


def split_shared(linked: DataFrame, max_shared: int) -> tuple[DataFrame, DataFrame]:
    """(edges to expand: keys held by 2..max_shared accounts, accounts holding an over-shared key),
    from `linked_memberships`."""
    edges = linked.where(F.col("holders") <= max_shared).select("key", "account").distinct()
    shared = linked.where(F.col("holders") > max_shared).select("account").distinct()
    return edges, shared


MAX_ROUNDS = 100


def _oriented(edges: DataFrame) -> DataFrame:
    """Undirected edges as distinct (hi, lo) pairs with hi > lo (self loops dropped)."""
    return (
        edges.select(F.greatest("hi", "lo").alias("hi"), F.least("hi", "lo").alias("lo"))
        .where(F.col("hi") != F.col("lo"))
        .distinct()
    )


def large_star(edges: DataFrame) -> DataFrame:
    """Each node's larger neighbours link to the smallest node of its closed neighbourhood."""
    both = edges.select(F.col("hi").alias("u"), F.col("lo").alias("v")).unionByName(
        edges.select(F.col("lo").alias("u"), F.col("hi").alias("v"))
    )
    smallest = both.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
    moved = (
        both.where(F.col("v") > F.col("u")).join(smallest, "u").select(F.col("v").alias("hi"), F.col("m").alias("lo"))
    )
    return _oriented(moved)


def small_star(edges: DataFrame) -> DataFrame:
    """Each node and its smaller neighbours link to the smallest of them."""
    smallest = edges.groupBy("hi").agg(F.min("lo").alias("m"))
    moved = edges.join(smallest, "hi").select(F.col("lo").alias("hi"), F.col("m").alias("lo"))
    return _oriented(moved.unionByName(smallest.select("hi", F.col("m").alias("lo"))))


def connected_components(edges: DataFrame, cut=local_cut, max_rounds: int = MAX_ROUNDS) -> tuple[DataFrame, int]:
    """(account, cluster) for every account in `edges` (key, account), and the rounds it took.

    `cut(df, name)` materialises a round (the stage's lineage policy) so the plan stays small.
    """
    centre = edges.groupBy("key").agg(F.min("account").alias("lo"))
    stars = edges.join(centre, "key").select(F.col("account").alias("hi"), "lo")
    current = cut(_oriented(stars), "identity graph stars")
    for rounds in range(1, max_rounds + 1):
        updated = cut(small_star(large_star(current)), f"identity graph round {rounds}")
        # Both rounds are sets of distinct (hi, lo) edges: equal when no edge lacks a partner (one job).
        same = (
            updated.withColumn("_new", F.lit(True))
            .join(current.withColumn("_old", F.lit(True)), ["hi", "lo"], "full_outer")
            .where(F.col("_new").isNull() | F.col("_old").isNull())
            .isEmpty()
        )
        current = updated
        if same:
            accounts = edges.select("account").distinct()
            label = current.groupBy(F.col("hi").alias("account")).agg(F.min("lo").alias("cluster"))
            clusters = accounts.join(label, "account", "left").select(
                "account", F.coalesce(F.col("cluster"), F.col("account")).alias("cluster")
            )
            return clusters, rounds
    raise RuntimeError(f"identity graph did not converge in {max_rounds} rounds")


def linked_accounts(
    df: DataFrame, max_shared: int, cut=local_cut, carry: Sequence[str] = ()
) -> tuple[DataFrame, dict[str, int]]:
    """The accounts of `df` that share an identifier with another account, and graph figures.

    Rows: (`global_user_id`, *carry, `identity_cluster_id`, `cluster_size`, `_shared_identifier`),
    one per distinct (account, *carry) of `df`. An account not listed shares nothing: it is a
    cluster of one (its own id), and the few rows listed are all the rules about clusters need,
    whatever the size of `df`.
    """
    linked = linked_memberships(identifier_memberships(df, carry=carry), cut)
    edges, shared = split_shared(linked, max_shared)
    clusters, rounds = connected_components(edges, cut)
    out = (
        linked.select("account", *carry)
        .distinct()
        .join(clusters, "account", "left")
        .join(shared.withColumn("_shared_identifier", F.lit(True)), "account", "left")
        .select(
            F.col("account").alias("global_user_id"),
            *carry,
            F.coalesce(F.col("cluster"), F.col("account")).alias("identity_cluster_id"),
            F.coalesce(F.col("_shared_identifier"), F.lit(False)).alias("_shared_identifier"),
        )
        .withColumn("cluster_size", F.count(F.lit(1)).over(Window.partitionBy("identity_cluster_id")))
    )
    return out, {"graph_rounds": rounds}


def with_identity_clusters(df: DataFrame, max_shared: int, cut=local_cut) -> tuple[DataFrame, dict[str, int]]:
    """`df` plus `identity_cluster_id`, `cluster_size` and `_shared_identifier`; and graph figures."""
    linked, figures = linked_accounts(df, max_shared, cut)
    return with_cluster_columns(df, linked), figures


def with_cluster_columns(
    df: DataFrame, linked: DataFrame, on: Sequence[str] = ("global_user_id",), verdicts: Sequence[str] = ()
) -> DataFrame:
    """`df` joined to `linked_accounts` rows (and their `verdicts` columns, null for an account not
    listed) on `on`; an account not listed is a cluster of one."""
    listed = linked.select(*on, "identity_cluster_id", "cluster_size", "_shared_identifier", *verdicts)
    return (
        df.join(listed, list(on), "left")
        .withColumn("identity_cluster_id", F.coalesce(F.col("identity_cluster_id"), F.col("global_user_id")))
        .withColumn("cluster_size", F.coalesce(F.col("cluster_size"), F.lit(1).cast("long")))
        .withColumn("_shared_identifier", F.coalesce(F.col("_shared_identifier"), F.lit(False)))
    )


def keep_one_per_cluster(priority: list[Column]) -> Column:
    """Rank inside a cluster (1 = the account that stays); `priority` must end with a unique key."""
    return F.row_number().over(Window.partitionBy("identity_cluster_id").orderBy(*priority))

"""Identity resolution: accounts sharing an identifier are one person (connected components).

Vertices are accounts; a canonical email, a phone, a device id or a payment fingerprint shared by
several accounts links them. Blank and placeholder values link nothing. A value shared by more
than `max_shared` accounts (a call-centre phone, a shop's card reader) is not expanded at all:
its accounts get `SHARED_IDENTIFIER` instead, so one hot key can never blow up a join.

Components come from min-label propagation over the bipartite (identifier, account) graph:
each round gives every identifier the smallest label of its accounts and every account the
smallest label of its identifiers. Each identifier is a star, so rounds ≈ half the diameter of
a component; lineage is cut after every round. `identity_cluster_id` is the smallest account id
of the component.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
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


def identifier_memberships(df: DataFrame, account: str = "global_user_id") -> DataFrame:
    """(key, account) for every usable identifier value of every account."""
    pairs = F.array(*[F.struct(F.lit(c).alias("kind"), F.col(c).cast("string").alias("value")) for c in IDENTIFIERS])
    exploded = df.select(F.col(account).alias("account"), F.explode(pairs).alias("id"))
    value = F.lower(F.trim(F.col("id.value")))
    return (
        exploded.where(F.col("id.value").isNotNull() & ~value.isin(*PLACEHOLDERS))
        .select(F.concat(F.col("id.kind"), F.lit(":"), F.col("id.value")).alias("key"), "account")
        .distinct()
    )


def split_shared(memberships: DataFrame, max_shared: int) -> tuple[DataFrame, DataFrame]:
    """(edges to expand: keys held by 2..max_shared accounts, accounts holding an over-shared key)."""
    sizes = memberships.groupBy("key").agg(F.count(F.lit(1)).alias("holders"))
    sized = memberships.join(sizes, "key")
    edges = sized.where((F.col("holders") > 1) & (F.col("holders") <= max_shared)).select("key", "account")
    shared = sized.where(F.col("holders") > max_shared).select("account").distinct()
    return edges, shared


def connected_components(edges: DataFrame, cut=local_cut, max_rounds: int = 30) -> tuple[DataFrame, int]:
    """(account, cluster) for every account in `edges`, and the rounds it took.

    `cut(df, name)` materialises a round (the stage's lineage policy) so the plan stays small.
    """
    labels = cut(edges.select("account").distinct().withColumn("label", F.col("account")), "identity graph labels")
    for rounds in range(1, max_rounds + 1):
        key_label = edges.join(labels, "account").groupBy("key").agg(F.min("label").alias("key_label"))
        best = edges.join(key_label, "key").groupBy("account").agg(F.min("key_label").alias("candidate"))
        updated = cut(
            labels.join(best, "account", "left").select(
                "account",
                F.least(F.col("label"), F.coalesce(F.col("candidate"), F.col("label"))).alias("label"),
                (F.col("candidate") < F.col("label")).alias("_changed"),
            ),
            f"identity graph round {rounds}",
        )
        changed = updated.where("_changed").limit(1).count()
        labels = updated.drop("_changed")
        if changed == 0:
            return labels.withColumnRenamed("label", "cluster"), rounds
    raise RuntimeError(f"identity graph did not converge in {max_rounds} rounds")


def with_identity_clusters(df: DataFrame, max_shared: int, cut=local_cut) -> tuple[DataFrame, dict[str, int]]:
    """`df` plus `identity_cluster_id`, `cluster_size` and `_shared_identifier`; and graph figures."""
    memberships = cut(identifier_memberships(df), "identity graph memberships")
    edges, shared = split_shared(memberships, max_shared)
    edges = cut(edges, "identity graph edges")
    clusters, rounds = connected_components(edges, cut)
    out = (
        df.join(clusters.withColumnRenamed("account", "global_user_id"), "global_user_id", "left")
        .withColumn("identity_cluster_id", F.coalesce(F.col("cluster"), F.col("global_user_id")))
        .drop("cluster")
        .join(
            shared.select(F.col("account").alias("global_user_id"), F.lit(True).alias("_shared_identifier")),
            "global_user_id",
            "left",
        )
        .withColumn("_shared_identifier", F.coalesce(F.col("_shared_identifier"), F.lit(False)))
    )
    sizes = out.groupBy("identity_cluster_id").agg(F.count(F.lit(1)).alias("cluster_size"))
    out = out.join(sizes, "identity_cluster_id")
    return out, {"graph_rounds": rounds}


def keep_one_per_cluster(priority: list[Column]) -> Column:
    """Rank inside a cluster (1 = the account that stays); `priority` must end with a unique key."""
    from pyspark.sql import Window

    return F.row_number().over(Window.partitionBy("identity_cluster_id").orderBy(*priority))

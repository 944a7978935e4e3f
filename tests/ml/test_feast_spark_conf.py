"""Feast's Spark offline store on the production profile reads the exports from the configured S3 endpoint with
the configured keys (the session settings lacked both: Spark would have gone to AWS with its default chain)."""

from resources.feast import FeastResource


def test_the_spark_offline_store_gets_the_s3a_settings_of_the_resource():
    feast = FeastResource(registry_uri="sqlite:///x.db", online_store="sqlite", online_path="/tmp/o.db",
                          offline_root="s3://lake/feast/offline", repo_path="features", offline_store="spark",
                          spark_conf={"spark.master": "spark://127.0.0.1:7077"}, s3_endpoint="http://127.0.0.1:9000",
                          s3_access_key="AK", s3_secret_key="SK", s3_region="eu-west-1")
    conf = feast.repo_config().offline_store.spark_conf
    assert conf["spark.master"] == "spark://127.0.0.1:7077"
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert (conf["spark.hadoop.fs.s3a.access.key"], conf["spark.hadoop.fs.s3a.secret.key"]) == ("AK", "SK")
    assert conf["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"  # the exports' s3:// paths
    assert "spark.hadoop.fs.s3a.access.key" not in feast.spark_conf  # not in the config the UI shows
    local = FeastResource(registry_uri="sqlite:///x.db", online_store="sqlite", online_path="/tmp/o.db",
                          offline_root="/tmp/offline", repo_path="features", offline_store="spark",
                          spark_conf={"spark.master": "local[2]"})
    assert local.repo_config().offline_store.spark_conf == {"spark.master": "local[2]"}

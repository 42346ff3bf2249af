# One Pub/Sub topic with its subscriptions. Push subscriptions always carry OIDC auth, a retry
# policy and a dead-letter policy: the blocks below are static, so a push subscription without
# them cannot be declared through this module. The one exception is a dead-letter topic's sink
# (`sink_subscriptions`): it pushes what Pub/Sub gave up on to a service that records and
# acknowledges every message, so it has no dead-letter policy of its own.

resource "google_pubsub_topic" "this" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; messages are transient run messages, and CMEK would add a KMS key ring and its cost to every environment. Set kms_key_name to use CMEK.
  project                    = var.project_id
  name                       = var.name
  labels                     = var.labels
  kms_key_name               = var.kms_key_name
  message_retention_duration = var.message_retention_duration
}

resource "google_pubsub_subscription" "push" {
  for_each = var.push_subscriptions

  project                    = var.project_id
  name                       = each.key
  topic                      = google_pubsub_topic.this.id
  labels                     = merge(var.labels, each.value.labels)
  ack_deadline_seconds       = each.value.ack_deadline_seconds
  message_retention_duration = each.value.message_retention_duration

  push_config {
    push_endpoint = each.value.endpoint
    oidc_token {
      service_account_email = each.value.oidc.service_account_email
      audience              = each.value.oidc.audience
    }
  }

  retry_policy {
    minimum_backoff = "${each.value.retry.minimum_backoff_seconds}s"
    maximum_backoff = "${each.value.retry.maximum_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = each.value.dead_letter.topic
    max_delivery_attempts = each.value.dead_letter.max_delivery_attempts
  }

  # Never expire for inactivity: a quiet workspace must not lose its subscriptions.
  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "sink" {
  for_each = var.sink_subscriptions

  project                    = var.project_id
  name                       = each.key
  topic                      = google_pubsub_topic.this.id
  labels                     = merge(var.labels, each.value.labels)
  ack_deadline_seconds       = each.value.ack_deadline_seconds
  message_retention_duration = each.value.message_retention_duration

  push_config {
    push_endpoint = each.value.endpoint
    oidc_token {
      service_account_email = each.value.oidc.service_account_email
      audience              = each.value.oidc.audience
    }
  }

  retry_policy {
    minimum_backoff = "${each.value.retry.minimum_backoff_seconds}s"
    maximum_backoff = "${each.value.retry.maximum_backoff_seconds}s"
  }

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "pull" {
  for_each = var.pull_subscriptions

  project                    = var.project_id
  name                       = each.key
  topic                      = google_pubsub_topic.this.id
  labels                     = merge(var.labels, each.value.labels)
  ack_deadline_seconds       = each.value.ack_deadline_seconds
  message_retention_duration = each.value.message_retention_duration
  retain_acked_messages      = each.value.retain_acked_messages

  expiration_policy {
    ttl = ""
  }
}

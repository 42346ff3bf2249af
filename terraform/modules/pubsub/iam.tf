# Topic-level grants, e.g. roles/pubsub.publisher for the services that publish here and for the
# Pub/Sub service agent on a dead-letter topic. Authoritative per role.
resource "google_pubsub_topic_iam_binding" "this" {
  for_each = { for role, members in var.iam : role => members if length(members) > 0 }

  project = var.project_id
  topic   = google_pubsub_topic.this.name
  role    = each.key
  members = each.value
}

# Dead-lettering needs the Pub/Sub service agent to be a subscriber on the source subscription
# (to acknowledge what it forwards); publisher on the dead-letter topic is granted on that topic.
resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = var.push_subscriptions

  project      = var.project_id
  subscription = google_pubsub_subscription.push[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${var.pubsub_service_agent}"
}

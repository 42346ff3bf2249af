output "api_url" {
  description = "URL of the HTTP api (call it with an identity token of one of api_invokers)."
  value       = one([for k, s in var.topology.services : module.services[k].uri if s.http])
}

output "service_urls" {
  description = "Cloud Run URL of every service."
  value       = { for k, m in module.services : k => m.uri }
}

output "service_accounts" {
  description = "Runtime service account email of every service."
  value       = { for k, m in module.service_accounts : k => m.email }
}

output "topics" {
  description = "Topic ids by name (intents, steps, tools, ...)."
  value       = { for k, m in module.topics : k => m.id }
}

output "dead_letter_topics" {
  description = "Dead-letter topic ids by name, with their pull subscriptions."
  value = {
    for k, m in module.dead_letter_topics : k => {
      id                 = m.id
      pull_subscriptions = m.pull_subscription_ids
    }
  }
}

output "push_subscriptions" {
  description = "Push subscription ids by name."
  value       = merge([for m in values(module.topics) : m.push_subscription_ids]...)
}

output "queues" {
  description = "Cloud Tasks queue ids by name."
  value       = { for k, m in module.queues : k => m.id }
}

output "buckets" {
  description = "Bucket names."
  value       = [for m in values(module.buckets) : m.name]
}

output "secrets" {
  description = "Secret ids to add versions to (gcloud secrets versions add)."
  value       = { for k, m in module.secrets : k => m.id }
}

output "push_invoker" {
  description = "Service account Pub/Sub uses for push OIDC tokens."
  value       = module.push_invoker.email
}

output "tasks_invoker" {
  description = "Service account Cloud Tasks uses for task OIDC tokens."
  value       = module.tasks_invoker.email
}

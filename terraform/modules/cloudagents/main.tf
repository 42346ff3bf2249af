# The whole workload for one workspace, wired from the generated topology: every topic,
# subscription, dead-letter topic, queue, bucket, secret and service comes from
# var.topology (scripts/gen_terraform_topology.py over cloudagents.topology). Nothing here lists
# a topic by name.

locals {
  workspace = var.topology.workspace
  labels    = merge({ app = "cloudagents", workspace = local.workspace }, var.labels)

  # Cloud Run and service account names: "<workspace>-<service with hyphens>".
  service_names = { for k in keys(var.topology.services) : k => "${local.workspace}-${replace(k, "_", "-")}" }

  # Cloud Run's deterministic URL (https://NAME-PROJECT_NUMBER.REGION.run.app): known before the
  # service exists, so a service can be told its own URL (the broker's Cloud Tasks target).
  service_urls = {
    for k, name in local.service_names : k => "https://${name}-${module.project.number}.${var.region}.run.app"
  }
  queue_target_urls = { for q, spec in var.topology.queues : q => local.service_urls[spec.service] }

  settings = {
    for k in keys(var.topology.services) : k => {
      min_instances   = coalesce(try(var.service_settings[k].min_instances, null), var.service_defaults.min_instances)
      max_instances   = coalesce(try(var.service_settings[k].max_instances, null), var.service_defaults.max_instances)
      concurrency     = coalesce(try(var.service_settings[k].concurrency, null), var.service_defaults.concurrency)
      timeout_seconds = coalesce(try(var.service_settings[k].timeout_seconds, null), var.service_defaults.timeout_seconds)
      cpu             = coalesce(try(var.service_settings[k].cpu, null), var.service_defaults.cpu)
      memory          = coalesce(try(var.service_settings[k].memory, null), var.service_defaults.memory)
    }
  }

  apis = [
    "cloudtasks.googleapis.com",
    "cloudtrace.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ]
}

module "project" {
  source     = "../project_services"
  project_id = var.project_id
  services   = var.enable_apis ? local.apis : []
}

module "firestore" {
  source                 = "../firestore"
  project_id             = module.project.project_id
  location_id            = coalesce(var.firestore_location, var.region)
  point_in_time_recovery = var.firestore_point_in_time_recovery
  delete_protection      = var.deletion_protection
  ttl_fields             = var.firestore_ttl_fields
}

# One runtime identity per service.
module "service_accounts" {
  source       = "../service_account"
  for_each     = var.topology.services
  project_id   = module.project.project_id
  account_id   = local.service_names[each.key]
  display_name = "cloudagents ${each.key} (${local.workspace})"
  project_roles = [
    # Firestore has no resource-level IAM: datastore.user on the project is the narrowest role
    # that lets a service read and write documents. Every service keeps run state there.
    "roles/datastore.user",
    # Cloud Trace has no resource-level IAM either: spans are written to the project.
    "roles/cloudtrace.agent",
  ]
}

# The identity Pub/Sub signs push requests with (OIDC); it may only invoke the push services.
module "push_invoker" {
  source       = "../service_account"
  project_id   = module.project.project_id
  account_id   = "${local.workspace}-push-invoker"
  display_name = "cloudagents Pub/Sub push invoker (${local.workspace})"
  iam = {
    # Pub/Sub mints the push OIDC token as this account (needed explicitly in projects created
    # before April 2021); granted on this account only, never on the project.
    "roles/iam.serviceAccountTokenCreator" = ["serviceAccount:${module.project.pubsub_service_agent}"]
  }
}

# The identity Cloud Tasks signs task requests with; only the services that enqueue may use it.
module "tasks_invoker" {
  source       = "../service_account"
  project_id   = module.project.project_id
  account_id   = "${local.workspace}-tasks-invoker"
  display_name = "cloudagents Cloud Tasks invoker (${local.workspace})"
  iam = {
    "roles/iam.serviceAccountUser" = [
      for k, s in var.topology.services : module.service_accounts[k].iam_email if length(s.enqueues) > 0
    ]
  }
}

module "secrets" {
  source     = "../secret"
  for_each   = var.topology.secrets
  project_id = module.project.project_id
  secret_id  = each.key
  labels     = local.labels
  iam = {
    # Only the services whose declaration lists the secret (the model keys: run_executor).
    "roles/secretmanager.secretAccessor" = [for svc in each.value.accessors : module.service_accounts[svc].iam_email]
  }
}

module "buckets" {
  source            = "../gcs_bucket"
  for_each          = var.topology.buckets
  project_id        = module.project.project_id
  name              = replace(each.key, "{project}", var.project_id)
  location          = var.region
  delete_after_days = each.value.delete_after_days
  # Snapshots are written once per run step and expire with the lifecycle rule; keeping
  # noncurrent versions would only add storage cost.
  versioning    = false
  force_destroy = var.bucket_force_destroy
  labels        = local.labels
  iam = {
    "roles/storage.objectUser" = [for svc in each.value.object_users : module.service_accounts[svc].iam_email]
  }
}

module "queues" {
  source     = "../tasks_queue"
  for_each   = var.topology.queues
  project_id = module.project.project_id
  location   = var.region
  name       = each.key
  retry = {
    max_attempts = each.value.max_attempts
  }
  # A graph node type's queue caps its tasks in flight (null: the module's default).
  rate_limits = {
    max_concurrent_dispatches = each.value.max_concurrent_dispatches
  }
  iam = {
    "roles/cloudtasks.enqueuer" = [for svc in each.value.enqueuers : module.service_accounts[svc].iam_email]
  }
}

module "services" {
  source                = "../cloud_run_service"
  for_each              = var.topology.services
  project_id            = module.project.project_id
  region                = var.region
  name                  = local.service_names[each.key]
  description           = "cloudagents ${each.key}: ${each.value.source} target ${each.value.target}"
  image                 = var.image
  service_account_email = module.service_accounts[each.key].email
  # The api takes HTTP from named principals; push-only services take only Pub/Sub and Cloud
  # Tasks, which Cloud Run counts as internal traffic.
  ingress     = each.value.http ? "INGRESS_TRAFFIC_ALL" : "INGRESS_TRAFFIC_INTERNAL_ONLY"
  concurrency = local.settings[each.key].concurrency
  # Never shorter than the ack deadline: Pub/Sub would redeliver a request Cloud Run still runs.
  timeout_seconds = max(local.settings[each.key].timeout_seconds, each.value.min_request_timeout_seconds)
  scaling = {
    min_instances = local.settings[each.key].min_instances
    max_instances = local.settings[each.key].max_instances
  }
  resources = {
    cpu    = local.settings[each.key].cpu
    memory = local.settings[each.key].memory
  }
  env = merge(
    var.env,
    {
      SERVICE               = each.key
      GOOGLE_CLOUD_PROJECT  = var.project_id
      CLOUDAGENTS_WORKSPACE = local.workspace
      CLOUDAGENTS_LOCATION  = var.region
      # Spans go to Cloud Trace (each service account has roles/cloudtrace.agent).
      CLOUDAGENTS_TRACE_EXPORTER = "gcp"
    },
    {
      for k, v in {
        # try(): the map is built even when the filter below drops it.
        CLOUDAGENTS_BROKER_URL            = try(local.queue_target_urls[each.value.enqueues[0]], "")
        CLOUDAGENTS_TASKS_SERVICE_ACCOUNT = module.tasks_invoker.email
        # Wake-up tasks (runs that wait, deferred tool calls) call the run executor.
        CLOUDAGENTS_WAKE_URL = local.service_urls["run_executor"]
      } : k => v if length(each.value.enqueues) > 0
    },
    {
      for k, v in {
        # Graph workflows: which node types go to the graph worker service, and where it is
        # (every service that opens a superstep dispatches them; CLOUDAGENTS_GRAPH_MODULES,
        # the modules of the node functions, is the application's: var.env).
        CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES = join(",", var.topology.graph.push_node_types)
        CLOUDAGENTS_GRAPH_WORKER_URL      = try(local.service_urls["graph_worker"], "")
      } : k => v if length(var.topology.graph.push_node_types) > 0
    },
  )
  secret_env = {
    for name in each.value.secrets : name => { secret = module.secrets[name].secret_id }
  }
  invokers = concat(
    each.value.http ? var.api_invokers : [],
    length(each.value.push_subscriptions) > 0 ? [module.push_invoker.iam_email] : [],
    length(each.value.task_queues) > 0 ? [module.tasks_invoker.iam_email] : [],
  )
  deletion_protection = var.deletion_protection
  labels              = local.labels

  # A revision that reads a secret fails to start until it may access it.
  depends_on = [module.secrets]
}

# Dead-letter topics first: push subscriptions name them. Each keeps what it receives in a pull
# subscription and pushes it to the run executor, which records it in `dead_letters` with its run
# (the sink has no dead-letter policy: it acknowledges everything); only the Pub/Sub service
# agent may publish to it.
module "dead_letter_topics" {
  source     = "../pubsub"
  for_each   = var.topology.dead_letter_topics
  project_id = module.project.project_id
  name       = each.key
  labels     = merge(local.labels, { role = "dead-letter" })
  pull_subscriptions = {
    for name in each.value.pull_subscriptions : name => {}
  }
  sink_subscriptions = {
    (each.value.sink.name) = {
      endpoint = "${module.services[each.value.sink.service].uri}${each.value.sink.path}"
      oidc = {
        service_account_email = module.push_invoker.email
        audience              = module.services[each.value.sink.service].uri
      }
      retry = {
        minimum_backoff_seconds = each.value.sink.minimum_backoff_seconds
        maximum_backoff_seconds = each.value.sink.maximum_backoff_seconds
      }
      ack_deadline_seconds = each.value.sink.ack_deadline_seconds
    }
  }
  iam = {
    "roles/pubsub.publisher" = ["serviceAccount:${module.project.pubsub_service_agent}"]
  }
}

module "topics" {
  source               = "../pubsub"
  for_each             = var.topology.topics
  project_id           = module.project.project_id
  name                 = each.key
  labels               = merge(local.labels, { role = each.value.role })
  pubsub_service_agent = module.project.pubsub_service_agent
  pull_subscriptions = {
    for name in each.value.pull_subscriptions : name => {
      ack_deadline_seconds = each.value.pull_ack_deadline_seconds
    }
  }
  push_subscriptions = {
    for name, s in each.value.push_subscriptions : name => {
      endpoint = "${module.services[s.service].uri}${s.path}"
      oidc = {
        service_account_email = module.push_invoker.email
        audience              = module.services[s.service].uri
      }
      dead_letter = {
        topic                 = module.dead_letter_topics[s.dead_letter_topic].id
        max_delivery_attempts = s.max_delivery_attempts
      }
      retry = {
        minimum_backoff_seconds = s.minimum_backoff_seconds
        maximum_backoff_seconds = s.maximum_backoff_seconds
      }
      ack_deadline_seconds = s.ack_deadline_seconds
    }
  }
  iam = {
    "roles/pubsub.publisher" = [for svc in each.value.publishers : module.service_accounts[svc].iam_email]
  }
}

//! Cross-field rules: what the schema walk cannot see. These follow
//! barman-cloud's `ValidateBackupConfiguration` and credential validators
//! (`pkg/api`), the plugin's CRD markers, and what the plugin needs at run
//! time (it refuses a configuration without credentials).

use url::Url;

use crate::destination::Destination;
use crate::error::ConfigError;
use crate::model::{
    API_VERSION, AzureCredentials, GoogleCredentials, KIND, ObjectStore, RetentionPolicy,
    S3Credentials, SecretRef, check_server_name,
};

const CONF: &str = "spec.configuration";

/// True when the schema walk already reported something at or under `path`;
/// rules about that part are skipped so one mistake gives one message.
fn reported(errs: &[ConfigError], path: &str) -> bool {
    errs.iter().any(|e| {
        e.path == path
            || e.path
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    })
}

/// Why a Secret name or key cannot be used as one path component, if it cannot.
pub(crate) fn secret_part_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("is empty")
    } else if s.contains('/') {
        Some("contains '/'")
    } else if s.contains("..") || s == "." {
        Some("contains '..' or is '.'")
    } else if s.chars().any(char::is_control) {
        Some("contains control characters")
    } else {
        None
    }
}

fn check_secret_ref(path: &str, r: &Option<SecretRef>, errs: &mut Vec<ConfigError>) {
    let Some(r) = r else { return };
    for (field, value, what) in [
        ("name", &r.name, "a Secret name"),
        ("key", &r.key, "a key of the Secret"),
    ] {
        let p = format!("{path}.{field}");
        if reported(errs, &p) {
            continue;
        }
        if let Some(problem) = secret_part_problem(value) {
            errs.push(ConfigError::with_value(
                p,
                value.clone(),
                problem,
                format!("{what} (one path component of the secrets directory, no '/' or '..')"),
            ));
        }
    }
}

pub(crate) fn validate(store: &ObjectStore, errs: &mut Vec<ConfigError>) {
    if !reported(errs, "apiVersion") && store.api_version != API_VERSION {
        errs.push(ConfigError::with_value(
            "apiVersion",
            store.api_version.clone(),
            "is not supported",
            API_VERSION,
        ));
    }
    if !reported(errs, "kind") && store.kind != KIND {
        let mut expected = KIND.to_string();
        if store.kind == "Cluster" {
            expected.push_str(" (walship reads the ObjectStore the Cluster's plugin refers to)");
        }
        errs.push(ConfigError::with_value(
            "kind",
            store.kind.clone(),
            "is not supported",
            expected,
        ));
    }
    if !reported(errs, "metadata.name") && store.metadata.name.is_empty() {
        errs.push(ConfigError::new(
            "metadata.name",
            "is empty",
            "the ObjectStore's name",
        ));
    }

    let spec = &store.spec;
    if let Some(rp) = &spec.retention_policy
        && !reported(errs, "spec.retentionPolicy")
        && RetentionPolicy::parse(rp).is_none()
    {
        errs.push(ConfigError::with_value(
            "spec.retentionPolicy",
            rp.clone(),
            "is not a valid retention policy",
            "a number of days, weeks or months such as 30d, 4w or 6m (^[1-9][0-9]*[dwm]$)",
        ));
    }
    if let Some(sidecar) = &spec.instance_sidecar_configuration {
        for (i, arg) in sidecar.additional_container_args.iter().enumerate() {
            if arg.starts_with("--log-level") {
                errs.push(ConfigError::with_value(
                    format!("spec.instanceSidecarConfiguration.additionalContainerArgs[{i}]"),
                    arg.clone(),
                    "sets the log level",
                    "spec.instanceSidecarConfiguration.logLevel instead",
                ));
            }
        }
    }

    let conf = &spec.configuration;
    let dest_path = format!("{CONF}.destinationPath");
    let destination = if reported(errs, &dest_path)
        || (conf.destination_path.is_empty() && reported(errs, "spec"))
    {
        None
    } else {
        match Destination::parse(&conf.destination_path) {
            Ok(d) => Some(d),
            Err(e) => {
                errs.push(e);
                None
            }
        }
    };

    if let Some(endpoint) = &conf.endpoint_url {
        let p = format!("{CONF}.endpointURL");
        if !reported(errs, &p) {
            let ok = Url::parse(endpoint).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                errs.push(ConfigError::with_value(
                    p,
                    endpoint.clone(),
                    "is not a valid endpoint URL",
                    "http(s)://HOST[:PORT][/PATH]",
                ));
            }
        }
    }
    check_secret_ref(&format!("{CONF}.endpointCA"), &conf.endpoint_ca, errs);
    if let Some(name) = &conf.server_name {
        let p = format!("{CONF}.serverName");
        if !reported(errs, &p)
            && let Err(e) = check_server_name(&p, name)
        {
            errs.push(e);
        }
    }

    if let Some(s3) = &conf.s3_credentials {
        check_s3(s3, errs);
    }
    if let Some(azure) = &conf.azure_credentials {
        check_azure(azure, errs);
    }
    if let Some(google) = &conf.google_credentials {
        check_google(google, errs);
    }
    if let Some(d) = &destination {
        check_credentials_fit(conf, d, errs);
    }
}

/// The credential block present must be the one the destination needs, and
/// the others absent (barman-cloud: "one and only one of azureCredentials,
/// s3Credentials and googleCredentials"; the plugin refuses to run without).
fn check_credentials_fit(
    conf: &crate::model::BarmanObjectStoreConfiguration,
    d: &Destination,
    errs: &mut Vec<ConfigError>,
) {
    let blocks = [
        ("s3Credentials", "s3", conf.s3_credentials.is_some()),
        (
            "azureCredentials",
            "azure",
            conf.azure_credentials.is_some(),
        ),
        ("googleCredentials", "gs", conf.google_credentials.is_some()),
    ];
    let needed = blocks.iter().find(|(_, kind, _)| *kind == d.kind());
    let scheme = match d {
        Destination::S3 { .. } => "an s3://",
        Destination::Gcs { .. } => "a gs://",
        Destination::Azure { .. } => "an Azure",
        Destination::File { .. } => "a file://",
    };
    let want = match needed {
        Some((name, _, _)) => format!("{name} for {scheme} destination"),
        None => format!("no credentials for {scheme} destination"),
    };
    for (name, kind, present) in blocks {
        let p = format!("{CONF}.{name}");
        if present && kind != d.kind() && !reported(errs, &p) {
            errs.push(ConfigError::new(
                p,
                format!("does not fit destinationPath {:?}", conf.destination_path),
                want.clone(),
            ));
        }
    }
    if let Some((name, _, false)) = needed {
        // A misspelt or misplaced block was already reported as an unknown
        // field pointing at this name; saying "missing" too is just noise.
        let quoted = format!("\"{name}\"");
        let nested = format!("{CONF}.{name}.");
        if errs.iter().any(|e| {
            e.problem == "unknown field"
                && (e.expected.contains(&quoted) || e.expected.contains(&nested))
        }) {
            return;
        }
        errs.push(ConfigError::new(
            format!("{CONF}.{name}"),
            format!(
                "is missing (destinationPath is {:?})",
                conf.destination_path
            ),
            format!("{name} for {scheme} destination"),
        ));
    }
}

fn check_s3(s3: &S3Credentials, errs: &mut Vec<ConfigError>) {
    let p = format!("{CONF}.s3Credentials");
    let skip = reported(errs, &p);
    for (field, r) in [
        ("accessKeyId", &s3.access_key_id),
        ("secretAccessKey", &s3.secret_access_key),
        ("sessionToken", &s3.session_token),
        ("region", &s3.region),
    ] {
        check_secret_ref(&format!("{p}.{field}"), r, errs);
    }
    if skip {
        return;
    }
    let keys = s3.access_key_id.is_some() || s3.secret_access_key.is_some();
    if s3.inherit_from_iam_role {
        let mut set: Vec<&str> = Vec::new();
        if s3.access_key_id.is_some() {
            set.push("accessKeyId");
        }
        if s3.secret_access_key.is_some() {
            set.push("secretAccessKey");
        }
        if s3.session_token.is_some() {
            set.push("sessionToken");
        }
        if !set.is_empty() {
            errs.push(ConfigError::with_value(
                format!("{p}.inheritFromIAMRole"),
                "true",
                format!("conflicts with {}", set.join(" and ")),
                "either inheritFromIAMRole: true or accessKeyId and secretAccessKey, not both",
            ));
        }
    } else if !keys {
        errs.push(ConfigError::new(
            p.clone(),
            "sets no authentication method",
            "accessKeyId and secretAccessKey, or inheritFromIAMRole: true",
        ));
    }
    if s3.access_key_id.is_some() && s3.secret_access_key.is_none() {
        errs.push(ConfigError::new(
            format!("{p}.secretAccessKey"),
            "is missing (accessKeyId is set)",
            "both accessKeyId and secretAccessKey",
        ));
    }
    if s3.secret_access_key.is_some() && s3.access_key_id.is_none() {
        errs.push(ConfigError::new(
            format!("{p}.accessKeyId"),
            "is missing (secretAccessKey is set)",
            "both accessKeyId and secretAccessKey",
        ));
    }
}

fn check_azure(az: &AzureCredentials, errs: &mut Vec<ConfigError>) {
    let p = format!("{CONF}.azureCredentials");
    let skip = reported(errs, &p);
    for (field, r) in [
        ("connectionString", &az.connection_string),
        ("storageAccount", &az.storage_account),
        ("storageKey", &az.storage_key),
        ("storageSasToken", &az.storage_sas_token),
    ] {
        check_secret_ref(&format!("{p}.{field}"), r, errs);
    }
    if skip {
        return;
    }
    let methods: Vec<&str> = [
        ("storageKey", az.storage_key.is_some()),
        ("storageSasToken", az.storage_sas_token.is_some()),
        ("inheritFromAzureAD", az.inherit_from_azure_ad),
        (
            "useDefaultAzureCredentials",
            az.use_default_azure_credentials,
        ),
    ]
    .into_iter()
    .filter_map(|(n, set)| set.then_some(n))
    .collect();

    if az.connection_string.is_some() {
        // The connection string carries the account and its key or SAS
        // token; anything next to it is ambiguous (barman-cloud: "when
        // connection string is specified, the other parameters must be empty").
        let others = std::iter::once("storageAccount")
            .filter(|_| az.storage_account.is_some())
            .chain(methods.iter().copied());
        for other in others {
            errs.push(ConfigError::new(
                format!("{p}.{other}"),
                "conflicts with connectionString",
                "connectionString alone (it already holds the account and its key or SAS token), \
                 or remove connectionString",
            ));
        }
        return;
    }
    match methods.as_slice() {
        [] => errs.push(ConfigError::new(
            p.clone(),
            "sets no authentication method",
            "connectionString, storageAccount with storageKey or storageSasToken, \
             inheritFromAzureAD: true, or useDefaultAzureCredentials: true",
        )),
        [_] => {}
        [first, rest @ ..] => {
            for other in rest {
                errs.push(ConfigError::new(
                    format!("{p}.{other}"),
                    format!("conflicts with {first}"),
                    "exactly one of storageKey, storageSasToken, inheritFromAzureAD, \
                     useDefaultAzureCredentials",
                ));
            }
        }
    }
    if (az.storage_key.is_some() || az.storage_sas_token.is_some()) && az.storage_account.is_none()
    {
        let with = if az.storage_key.is_some() {
            "storageKey"
        } else {
            "storageSasToken"
        };
        errs.push(ConfigError::new(
            format!("{p}.storageAccount"),
            format!("is missing ({with} is set)"),
            "storageAccount together with storageKey or storageSasToken",
        ));
    }
}

fn check_google(g: &GoogleCredentials, errs: &mut Vec<ConfigError>) {
    let p = format!("{CONF}.googleCredentials");
    let skip = reported(errs, &p);
    check_secret_ref(
        &format!("{p}.applicationCredentials"),
        &g.application_credentials,
        errs,
    );
    if skip {
        return;
    }
    match (g.gke_environment, g.application_credentials.is_some()) {
        (true, true) => errs.push(ConfigError::new(
            format!("{p}.applicationCredentials"),
            "conflicts with gkeEnvironment: true",
            "either gkeEnvironment: true or applicationCredentials, not both",
        )),
        (false, false) => errs.push(ConfigError::new(
            p,
            "sets no authentication method",
            "applicationCredentials or gkeEnvironment: true",
        )),
        _ => {}
    }
}
